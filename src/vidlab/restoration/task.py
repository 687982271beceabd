"""The restoration task (``train.py``, the default ``task``): validate, build, fit, test, log; return the metric."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig

from vidlab import tracking
from vidlab.files import atomic_path, write_text
from vidlab.jobs import job_dirs
from vidlab.preemption import requeued_checkpoint
from vidlab.restoration.checkpoints import check_resume
from vidlab.restoration.config import BASELINES, METRICS, RunSpec, model_window
from vidlab.restoration.corruption import CORRUPTIONS
from vidlab.restoration.data import RestorationDataModule
from vidlab.restoration.loading import load_module
from vidlab.restoration.module import ClipRestorer, RestorationModule, module_from_spec
from vidlab.restoration.previews import ValidationPreviewImages, plot_curves, preview_panels, side_by_side
from vidlab.schema import MlflowLoggerConfig
from vidlab.stops import on_stop_resume_from
from vidlab.tracking.inputs import log_inputs, video_split_inputs
from vidlab.tracking.models import log_model
from vidlab.trainer import (
    EpochLog,
    InterruptedCheckpoint,
    StopOnSignal,
    checked_optimizer,
    checkpoint_folder,
    trainer_kwargs,
)
from vidlab.video import write_gif, write_video

log = logging.getLogger(__name__)


class UndefinedMetricWarning(Callback):
    """Says once, in words, why the optimized metric is NaN: the validation clips hold no pixel it
    scores (e.g. no digit stroke inside a stain in a one-batch validation set)."""

    def __init__(self, metric: str):
        self.metric, self.warned = metric, False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if not self.warned and not trainer.sanity_checking and value is not None and math.isnan(float(value)):
            log.warning("%s is undefined this epoch: no validation pixel is content inside a stain (more "
                        "validation clips, or another optimized_metric); the epoch ranks last", self.metric)
            self.warned = True


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def comparison_table(summary: dict[str, float], model: str, smoothings: list[str],
                     baselines: list[str]) -> list[dict[str, Any]]:
    """One row per output: the stained input, each baseline, the raw model and each compared smoothing."""
    rows = []
    outputs = [("stained input", "stained")] + [(BASELINES[name], f"baseline_{name}") for name in baselines]
    outputs += [(f"{model}, smoothing=none", "raw")]
    outputs += [(f"{model}, smoothing={name}", f"smoothing_{name}") for name in smoothings if name != "none"]
    for label, variant in outputs:
        row: dict[str, Any] = {"output": label}
        for metric in METRICS:
            value = summary.get(f"test/{variant}/{metric}", math.nan)
            row[metric] = round(value, 4)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(rows[0]) + " |"
    rule = "|" + "---|" * len(rows[0])
    body = ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


@dataclass
class TestOutputs:
    """What a test run shows a person: files by artifact folder, figures and stills logged at the
    top level of the run, where MLflow's compare view finds them."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)


def write_test_outputs(module: RestorationModule, spec: RunSpec, output_dir: Path) -> TestOutputs:
    """Per-clip CSV, comparison table, side-by-side GIF and H.264 mp4 (plays in a browser), the
    preview's middle frame and the per-frame PSNR/flicker plot (also saved under ``output_dir/test``)."""
    out = output_dir / "test"
    out.mkdir(parents=True, exist_ok=True)
    outputs = TestOutputs()
    if module.records:
        outputs.files.append(("test", _write_csv(out / "test_clips.csv", module.records)))
        rows = comparison_table(module.test_summary, spec.model.name, spec.top.compare_smoothing,
                                spec.top.compare_baselines)
        outputs.files.append(("test", _write_csv(out / "comparison.csv", rows)))
        md = out / "comparison.md"
        write_text(md, markdown_table(rows))
        outputs.files.append(("test", md))
    if module.preview:
        video = side_by_side(preview_panels(module.preview, spec.smoothing.name), spec.preview.scale)
        fps = getattr(spec.dataset, "fps", 24.0)
        outputs.files.append(("previews", write_gif(out / "preview.gif", video, fps)))
        outputs.files.append(("previews", write_video(out / "preview.mp4", video, fps, codec="h264")))
        outputs.images["preview.png"] = video[len(video) // 2]
        outputs.figures["per_frame.png"] = plot_curves(module.curves)
    return outputs


def log_test_outputs(logger: MLFlowLogger | None, outputs: TestOutputs, output_dir: Path) -> None:
    """Figures saved under ``output_dir/test``; with a logger, everything logged to its run."""
    client, run_id = (logger.experiment, logger.run_id) if logger is not None else (None, None)
    tracking.log_figures(client, run_id, outputs.figures, output_dir / "test")
    if client is not None:
        tracking.log_artifacts(client, run_id, outputs.files)
        for name, image in outputs.images.items():
            with tracking.best_effort(f"image {name}", client, run_id):
                client.log_image(run_id, image, artifact_file=name)


def description(spec: RunSpec, test_summary: dict[str, float], outputs: TestOutputs) -> str:
    """The run's description in the MLflow UI: what was trained on what, how well it restores, where
    to look."""
    text = (f"`{spec.model.name}` restoring `{spec.dataset.name}` stained by `{spec.corruption.name}`, "
            f"smoothing `{spec.smoothing.name}`.")
    psnr = test_summary.get("test/smoothed/psnr_content_stain", math.nan)
    stained = test_summary.get("test/stained/psnr_content_stain", math.nan)
    if math.isfinite(psnr):
        text += f" Test PSNR inside the stain: {psnr:.2f} dB (stained input: {stained:.2f} dB)."
    if outputs.images:
        text += " Preview: `previews/preview.mp4`; per-epoch validation stills: the `val/preview` image."
    return text


EXAMPLE_SIDE = 64  # the input example's crop: MLflow stores it as JSON twice and runs the model on it


def log_restorer(spec: RunSpec, logger: MLFlowLogger, root: Path, best: Path,
                 datamodule: RestorationDataModule) -> None:
    """The best checkpoint as an MLflow model (:class:`ClipRestorer`), with a crop of a real stained
    test frame as its input example. A model that reads the stain mask (``mask_channel``) cannot
    restore blind, so it is not logged (its checkpoint is)."""
    if getattr(spec.model, "mask_channel", False):
        log.info("MLflow: no model logged: mask_channel=true needs the stain mask, which a blind restore lacks")
        return
    frame = next(iter(datamodule.stream("test")))["stained"][:1, :, :EXAMPLE_SIDE, :EXAMPLE_SIDE].float().numpy() / 255
    uri = tracking.resolve_tracking_uri(spec.logger.tracking_uri, root)
    log_model(spec.logger, uri, logger.run_id, ClipRestorer(load_module(best)), frame)


def checked_data(spec: RunSpec) -> RestorationDataModule:
    """The data module, its videos' sizes checked against the stain and the batch: before any run or
    checkpoint exists."""
    datamodule = RestorationDataModule(spec.dataset, CORRUPTIONS.build(spec.corruption), spec.model.context_frames,
                                       model_window(spec.model))
    datamodule.check_inputs()
    return datamodule


def open_run(spec: RunSpec, root: Path, output_dir: Path, resumed_run: str | None) -> MLFlowLogger | None:
    """The MLflow logger (None for ``logger=none``), continuing ``resumed_run`` where it can: a store
    that cannot be used, or may not be written, is one line here, before any work."""
    if not isinstance(spec.logger, MlflowLoggerConfig):
        return None
    tracking.ensure_experiment(spec.logger, root, "restoration")
    continued = tracking.reusable_run(spec.logger, root, resumed_run)
    tags = {"task": "restoration", **({"vidlab.resumed_from": resumed_run} if resumed_run and not continued else {})}
    return tracking.build_logger(spec.logger, root, output_dir, tags, continued)


def build_trainer(spec: RunSpec, kwargs: dict[str, Any], logger: MLFlowLogger | None, output_dir: Path
                  ) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Lightning Trainer with vidlab's callbacks, and its best-checkpoint callback."""
    checkpoints = checkpoint_folder(output_dir)
    checkpoint = ModelCheckpoint(
        dirpath=checkpoints, filename="best", monitor=spec.top.optimized_metric, mode=spec.top.optimized_mode,
        save_last=True,
    )
    callbacks = [checkpoint, InterruptedCheckpoint(checkpoints), StopOnSignal(), EpochLog(),
                 UndefinedMetricWarning(spec.top.optimized_metric), tracking.RunIdInCheckpoint()]
    if logger:
        callbacks += [LearningRateMonitor("epoch"),
                      ValidationPreviewImages(spec.preview.every_n_epochs, spec.smoothing.name, spec.preview.scale)]
    trainer = L.Trainer(**kwargs, logger=logger or False, callbacks=callbacks, default_root_dir=str(output_dir))
    on_stop_resume_from(checkpoints / "interrupted.ckpt")
    return trainer, checkpoint


def log_inputs_read(logger: MLFlowLogger, spec: RunSpec, datamodule: RestorationDataModule) -> None:
    """The videos each split read, as MLflow datasets with the data set's settings."""
    loader = ("cache_dir", "path", "batch_size", "samples_per_clip", "num_workers", "shuffle_buffer")
    settings = {k: v for k, v in asdict(spec.dataset).items() if k not in loader}
    videos = {split: [ref.path for ref in refs] for split, refs in datamodule.clips.items()}
    with tracking.best_effort("datasets", logger.experiment, logger.run_id):
        log_inputs(logger.experiment, logger.run_id, video_split_inputs(spec.dataset.name, videos, settings))


def log_results(spec: RunSpec, logger: MLFlowLogger | None, module: RestorationModule, output_dir: Path, root: Path,
                best: str | None, datamodule: RestorationDataModule) -> None:
    """The test's files (tables, figures), and on rank 0's run the best checkpoint, the description
    and the model."""
    outputs = write_test_outputs(module, spec, output_dir)
    if logger is not None and spec.logger.log_checkpoint and best:
        outputs.files.append(("checkpoints", Path(best)))
    log_test_outputs(logger, outputs, output_dir)
    if logger is None:
        return
    with tracking.best_effort("description", logger.experiment, logger.run_id):
        logger.experiment.set_tag(logger.run_id, "mlflow.note.content", description(spec, module.test_summary, outputs))
    if spec.logger.log_model and best:
        with tracking.best_effort("model", logger.experiment, logger.run_id):
            log_restorer(spec, logger, root, Path(best), datamodule)


def optimized_value(checkpoint: ModelCheckpoint, trainer: L.Trainer, metric: str) -> float | None:
    """The best validation value of ``optimized_metric`` (the last one where no best was kept)."""
    if checkpoint.best_model_score is not None and math.isfinite(float(checkpoint.best_model_score)):
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(metric)
    return None if value is None else float(value)


def run(cfg: DictConfig, spec: RunSpec) -> float | None:
    """Train and test the configuration ``spec`` (``cfg`` checked by :func:`vidlab.restoration.config.validate`:
    everything a user can get wrong failed there, before any file or run exists); returns
    ``optimized_metric`` (best validation value)."""
    kwargs, optimizer = trainer_kwargs(cfg), checked_optimizer(cfg)
    root, output_dir = job_dirs(cfg)
    ckpt_path = spec.top.ckpt_path or requeued_checkpoint(output_dir / "checkpoints")  # a Slurm job requeued resumes
    resumed_run = check_resume(ckpt_path, spec.model) if ckpt_path else None
    datamodule = checked_data(spec)
    logger = open_run(spec, root, output_dir, resumed_run)
    L.seed_everything(spec.top.seed, workers=True)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    module = module_from_spec(spec, optimizer, scheduler)
    trainer, checkpoint = build_trainer(spec, kwargs, logger, output_dir)
    rank_zero_logger = logger if logger is not None and trainer.is_global_zero else None  # the run is rank 0's
    if rank_zero_logger:
        tracking.log_config(logger.experiment, logger.run_id, cfg, output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if rank_zero_logger:
        log_inputs_read(rank_zero_logger, spec, datamodule)
    best = (checkpoint.best_model_path if checkpoint.best_model_path and Path(checkpoint.best_model_path).exists()
            else None)
    trainer.test(module, datamodule=datamodule, ckpt_path=best)
    log_results(spec, rank_zero_logger, module, output_dir, root, best, datamodule)
    if logger is not None:
        logger.finalize("success")
    return optimized_value(checkpoint, trainer, spec.top.optimized_metric)
