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
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
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


def score_table(split: Split, scores) -> pd.DataFrame:
    table = pd.DataFrame({"split_row": split.rows, "y": split.y, "score": scores})
    if split.clips is None:
        return table
    return pd.concat([split.clips[[c for c in ("path", "clip_idx", "start_frame", "end_frame", "n_frames")
                                   if c in split.clips]], table], axis=1)


def run(cfg: DictConfig, spec: ProbeSpec) -> float | None:
    """Fit, score and log the probe ``spec`` (``cfg`` checked by :func:`vidlab.probe.config.validate_probe`)
    describes."""
    kwargs = trainer_kwargs(cfg)
    optimizer = checked_optimizer(cfg)
    root, output_dir = job_dirs(cfg)
    uri = tracking.resolve_tracking_uri(getattr(spec.logger, "tracking_uri", "sqlite:///mlruns.db"), root)
    folder, run_ref = resolve_embeddings(spec.embeddings, uri)
    manifest = check_manifest(folder)
    annotations = None
    if spec.probe.annotations:
        if not Path(spec.probe.annotations).is_file():
            raise ProbeInputError(f"probe.annotations: no file {spec.probe.annotations}")
        annotations = pm.read_temporal_annotations(spec.probe.annotations)
    splits = load_splits(folder, manifest)
    probe: Probe = PROBES.build(spec.probe)
    if probe.needs_videos or annotations is not None:
        for split in splits.values():
            split.videos()  # refused now if the index is missing, not after training
    logger = None
    backbone = manifest.backbone.split("/")[-1]
    # a store that cannot be used, or may not be written: one line, before any work
    if isinstance(spec.logger, MlflowLoggerConfig):
        experiment_id = tracking.ensure_experiment(spec.logger, root, "probe")
        tags = {"task": "probe", "probe": spec.probe.name, "embeddings_dir": str(folder), "backbone": manifest.backbone,
                "extraction_run_id": run_ref or manifest.mlflow_run_id or ""}
        client = MlflowClient(uri)
        name = run_name(spec, folder, backbone, client, experiment_id)
        logger = tracking.build_logger(replace(spec.logger, run_name=name), root, output_dir, tags)
        tracking.log_config(logger.experiment, logger.run_id, cfg, output_dir)
        with tracking.best_effort("description", client, logger.run_id):
            client.set_tag(logger.run_id, "mlflow.note.content",
                           description(spec, folder, manifest, tags["extraction_run_id"], client))
        with tracking.best_effort("datasets", client, logger.run_id):
            log_inputs(client, logger.run_id,
                       embeddings_inputs(folder, manifest, {k: len(v.y) for k, v in splits.items()}))
    L.seed_everything(spec.seed, workers=True)
    selected = probe.fit(splits, FitContext(kwargs, optimizer, logger, output_dir, spec.seed))

    scores = {split: probe.scores(splits[split]) for split in ("val", "test")}
    threshold = pm.best_threshold(splits["val"].y, scores["val"])
    metrics = {**selected, "threshold": threshold, "rows_invalid_left_out": sum(s.invalid for s in splits.values())}
    tables = {split: score_table(splits[split], scores[split]) for split in ("val", "test")}
    for split in ("val", "test"):
        metrics.update({f"{split}/{k}": v
                        for k, v in pm.classification_metrics(splits[split].y, scores[split], threshold).items()})
        if "path" in tables[split]:
            metrics[f"{split}/video_roc_auc"] = pm.video_level_auc(tables[split])
    if annotations is not None:
        metrics["test/frame_roc_auc"], metrics["test/frame_videos"] = pm.frame_level_auc(tables["test"], annotations)
    out = output_dir / "probe"
    out.mkdir(parents=True, exist_ok=True)
    tables["test"].to_csv(out / "test_scores.csv", index=False)
    figures = plots.clip_figures(splits["test"].y, scores["test"], threshold)
    if "path" in tables["test"]:
        figures["score_curves.png"] = plots.score_curves(tables["test"], annotations or {}, threshold)
    print("\n".join(f"{k}: {float(v):.4f}" for k, v in metrics.items()))
    tracking.log_figures(logger and logger.experiment, logger and logger.run_id, figures, out / "plots")
    if logger is not None:
        logger.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)},
                           step=max(int(selected.get("probe/epochs", 0)), 0))
        files = [("probe", out / "test_scores.csv"), *(("probe", p) for p in probe.files())]
        tracking.log_artifacts(logger.experiment, logger.run_id, files)
        if spec.logger.log_model:
            with tracking.best_effort("model", logger.experiment, logger.run_id):
                model, flavor = probe.mlflow_model(splits["train"].scaler)
                example = splits["train"].scaler.inverse_transform(splits["val"].x[:4]).astype(np.float32)
                log_mlflow_model(spec.logger, uri, logger.run_id, model, example, flavor)
        logger.finalize("success")
    return metrics.get(spec.optimized_metric, metrics["val/roc_auc"])
