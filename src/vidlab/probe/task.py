"""``train.py task=probe``: a probe that tells normal clips from anomalous ones (``probe=logistic``,
``mlp`` or ``mil_ranking``), trained on an extraction's train split, selected on val, reported on
test at the clip, video and (with a temporal annotation file) frame level.

Everything is checked before any work or MLflow run: the manifest against the files, labels,
finiteness, the index the clips came from, the annotation file. The decision threshold (for
balanced accuracy, F1 and the confusion matrix) is the one with the best balanced accuracy on val.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vidlab import tracking
from vidlab.embeddings.manifest import Manifest
from vidlab.jobs import job_dirs
from vidlab.probe import metrics as pm
from vidlab.probe import plots
from vidlab.probe.config import PROBES, ProbeSpec
from vidlab.probe.data import ProbeInputError, Split, check_manifest, load_splits, resolve_embeddings
from vidlab.probe.fitting import FitContext, Probe
from vidlab.schema import MlflowLoggerConfig
from vidlab.tracking.inputs import content_digest, dataset_input, log_inputs
from vidlab.tracking.models import log_model as log_mlflow_model
from vidlab.trainer import checked_optimizer, trainer_kwargs

Annotations = dict[str, list[tuple[int, int]]]  # frame ranges by video name


def embeddings_inputs(folder: Path, manifest: Manifest, rows_by_split: dict[str, int]) -> list[DatasetInput]:
    """The embeddings a probe read, one dataset per split, digest from the extraction that wrote them
    (its index as the manifest file holds it: without the keys that are None)."""
    index = None if manifest.index is None else {k: v for k, v in asdict(manifest.index).items() if v is not None}
    fingerprint = {"index": index, "backbone": manifest.backbone, "preprocessing": manifest.preprocessing,
                   "extraction_run": manifest.mlflow_run_id}
    return [dataset_input(folder.name, folder, content_digest(fingerprint, split), split,
                          {"rows": rows, "backbone": manifest.backbone, "dim": manifest.embedding_dim})
            for split, rows in rows_by_split.items()]


def run_name(spec: ProbeSpec, folder: Path, backbone: str, client, experiment_id: str) -> str:
    """``<probe>-<embeddings folder>[-<backbone>]``; if another folder's run already has that name,
    a short hash of this folder's path makes it unique."""
    if spec.run_name:
        return spec.run_name
    name = f"{spec.probe.name}-{folder.name}" + ("" if backbone in folder.name else f"-{backbone}")
    same = client.search_runs([experiment_id], f"tags.`mlflow.runName` = '{name}'", max_results=50)
    if any(run.data.tags.get("embeddings_dir") != str(folder) for run in same):
        name += "@" + hashlib.sha256(str(folder).encode()).hexdigest()[:6]
    return name


def description(spec: ProbeSpec, folder: Path, manifest: Manifest, extraction_run_id: str, client) -> str:
    """The run's description in the MLflow UI: what was probed, with a link to the extraction run."""
    text = f"Probe `{spec.probe.name}` on the {manifest.backbone} embeddings in `{folder}`."
    try:
        extraction = client.get_run(extraction_run_id) if extraction_run_id else None
    except MlflowException:  # a run id from another store: named, not linked
        extraction = None
    if extraction is not None:
        return (f"{text} Extraction run: [{extraction.info.run_name}]"
                f"(#/experiments/{extraction.info.experiment_id}/runs/{extraction_run_id}).")
    return text + (f" Extraction run id: {extraction_run_id} (not in this store)." if extraction_run_id else "")


def score_table(split: Split, scores: np.ndarray) -> pd.DataFrame:
    """The split's clips (where an index names them) with their labels and the probe's scores, row by row."""
    table = pd.DataFrame({"split_row": split.rows, "y": split.y, "score": scores})
    if split.clips is None:
        return table
    return pd.concat([split.clips[[c for c in ("path", "clip_idx", "start_frame", "end_frame", "n_frames")
                                   if c in split.clips]], table], axis=1)


@dataclass
class ProbeData:
    """What the probe reads, all checked: the extraction (folder, run, manifest, splits) and the annotations."""

    folder: Path
    run_ref: str | None
    manifest: Manifest
    splits: dict[str, Split]
    annotations: Annotations | None


@dataclass
class ProbeResults:
    """The probe's val and test scores, the threshold chosen on val, the metrics and the per-clip score tables."""

    selected: dict[str, float]
    scores: dict[str, np.ndarray]
    threshold: float
    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame]


def read_annotations(path: str | None) -> Annotations | None:
    """The temporal annotation file ``probe.annotations`` names (None if none): a missing one refused now."""
    if not path:
        return None
    if not Path(path).is_file():
        raise ProbeInputError(f"probe.annotations: no file {path}")
    return pm.read_temporal_annotations(path)


def checked_data(spec: ProbeSpec, uri: str) -> tuple[ProbeData, Probe]:
    """The extraction, its splits, the annotations and the probe, each checked in turn (the index too where
    videos are read) before any run or file exists."""
    folder, run_ref = resolve_embeddings(spec.embeddings, uri)
    manifest = check_manifest(folder)
    annotations = read_annotations(spec.probe.annotations)
    splits = load_splits(folder, manifest)
    probe: Probe = PROBES.build(spec.probe)
    if probe.needs_videos or annotations is not None:
        for split in splits.values():
            split.videos()  # refused now if the index is missing, not after training
    return ProbeData(folder, run_ref, manifest, splits, annotations), probe


def open_run(cfg: DictConfig, spec: ProbeSpec, data: ProbeData, root: Path, output_dir: Path,
             uri: str) -> MLFlowLogger | None:
    """The MLflow run (None for ``logger=none``), named, described, with its config and datasets: a store
    that cannot be used, or may not be written, is one line here, before any work."""
    if not isinstance(spec.logger, MlflowLoggerConfig):
        return None
    folder, manifest = data.folder, data.manifest
    experiment_id = tracking.ensure_experiment(spec.logger, root, "probe")
    tags = {"task": "probe", "probe": spec.probe.name, "embeddings_dir": str(folder), "backbone": manifest.backbone,
            "extraction_run_id": data.run_ref or manifest.mlflow_run_id or ""}
    client = MlflowClient(uri)
    name = run_name(spec, folder, manifest.backbone.split("/")[-1], client, experiment_id)
    logger = tracking.build_logger(replace(spec.logger, run_name=name), root, output_dir, tags)
    tracking.log_config(logger.experiment, logger.run_id, cfg, output_dir)
    with tracking.best_effort("description", client, logger.run_id):
        client.set_tag(logger.run_id, "mlflow.note.content",
                       description(spec, folder, manifest, tags["extraction_run_id"], client))
    with tracking.best_effort("datasets", client, logger.run_id):
        log_inputs(client, logger.run_id,
                   embeddings_inputs(folder, manifest, {k: len(v.y) for k, v in data.splits.items()}))
    return logger


def evaluate(probe: Probe, data: ProbeData, selected: dict[str, float]) -> ProbeResults:
    """Val and test scores, the threshold with the best balanced accuracy on val, and the clip, video and
    (with annotations) frame metrics, after the ones the fit selected on."""
    splits = data.splits
    scores = {split: probe.scores(splits[split]) for split in ("val", "test")}
    threshold = pm.best_threshold(splits["val"].y, scores["val"])
    metrics = {**selected, "threshold": threshold, "rows_invalid_left_out": sum(s.invalid for s in splits.values())}
    tables = {split: score_table(splits[split], scores[split]) for split in ("val", "test")}
    for split in ("val", "test"):
        metrics.update({f"{split}/{k}": v
                        for k, v in pm.classification_metrics(splits[split].y, scores[split], threshold).items()})
        if "path" in tables[split]:
            metrics[f"{split}/video_roc_auc"] = pm.video_level_auc(tables[split])
    if data.annotations is not None:
        frame = pm.frame_level_auc(tables["test"], data.annotations)
        metrics["test/frame_roc_auc"], metrics["test/frame_videos"] = frame
    return ProbeResults(selected, scores, threshold, metrics, tables)


def write_test_outputs(data: ProbeData, results: ProbeResults, out: Path) -> dict[str, Figure]:
    """``out/test_scores.csv``, and the test split's figures (score curves where clips name their videos)."""
    table, threshold = results.tables["test"], results.threshold
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "test_scores.csv", index=False)
    figures = plots.clip_figures(data.splits["test"].y, results.scores["test"], threshold)
    if "path" in table:
        figures["score_curves.png"] = plots.score_curves(table, data.annotations or {}, threshold)
    return figures


def log_probe_model(spec: ProbeSpec, uri: str, run_id: str, probe: Probe, splits: dict[str, Split]) -> None:
    """The probe as an MLflow model, with 4 val rows (unscaled, as a caller passes them) as its input example."""
    model, flavor = probe.mlflow_model(splits["train"].scaler)
    example = splits["train"].scaler.inverse_transform(splits["val"].x[:4]).astype(np.float32)
    log_mlflow_model(spec.logger, uri, run_id, model, example, flavor)


def log_results(spec: ProbeSpec, logger: MLFlowLogger | None, probe: Probe, data: ProbeData, results: ProbeResults,
                output_dir: Path, uri: str) -> None:
    """The test's scores and figures under ``output_dir/probe`` and the metrics printed; with a run, the
    metrics, files and (``log_model``) the model logged to it."""
    out = output_dir / "probe"
    figures = write_test_outputs(data, results, out)
    print("\n".join(f"{k}: {float(v):.4f}" for k, v in results.metrics.items()))
    tracking.log_figures(logger and logger.experiment, logger and logger.run_id, figures, out / "plots")
    if logger is None:
        return
    logger.log_metrics({k: v for k, v in results.metrics.items() if math.isfinite(v)},
                       step=max(int(results.selected.get("probe/epochs", 0)), 0))
    files = [("probe", out / "test_scores.csv"), *(("probe", p) for p in probe.files())]
    tracking.log_artifacts(logger.experiment, logger.run_id, files)
    if spec.logger.log_model:
        with tracking.best_effort("model", logger.experiment, logger.run_id):
            log_probe_model(spec, uri, logger.run_id, probe, data.splits)


def run(cfg: DictConfig, spec: ProbeSpec) -> float | None:
    """Fit, score and log the probe ``spec`` (``cfg`` checked by :func:`vidlab.probe.config.validate_probe`)
    describes; returns ``optimized_metric`` (``val/roc_auc`` where the probe has no such metric)."""
    kwargs, optimizer = trainer_kwargs(cfg), checked_optimizer(cfg)
    root, output_dir = job_dirs(cfg)
    uri = tracking.resolve_tracking_uri(getattr(spec.logger, "tracking_uri", "sqlite:///mlruns.db"), root)
    data, probe = checked_data(spec, uri)
    logger = open_run(cfg, spec, data, root, output_dir, uri)
    L.seed_everything(spec.seed, workers=True)
    selected = probe.fit(data.splits, FitContext(kwargs, optimizer, logger, output_dir, spec.seed))
    results = evaluate(probe, data, selected)
    log_results(spec, logger, probe, data, results, output_dir, uri)
    if logger is not None:
        logger.finalize("success")
    return results.metrics.get(spec.optimized_metric, results.metrics["val/roc_auc"])
