"""The restoration task (``train.py``, the default ``task``): validate, build, fit, test, log; return the metric."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, OnExceptionCheckpoint
from omegaconf import DictConfig

from vidlab import tracking
from vidlab.files import atomic_path, write_text
from vidlab.jobs import StopOnSignal, checked_optimizer, job_dirs, on_stop_say, trainer_kwargs
from vidlab.restoration.baselines import LABELS
from vidlab.restoration.config import RunSpec, model_window, validate
from vidlab.restoration.corruption import build_corruption
from vidlab.restoration.data import RestorationDataModule
from vidlab.restoration.metrics import METRICS
from vidlab.restoration.module import RestorationModule, module_from_spec
from vidlab.restoration.previews import plot_curves, side_by_side
from vidlab.schema import MlflowLoggerConfig
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


def comparison_table(summary: dict[str, float], model: str, smoothings: list[str], baselines: list[str]) -> list[dict[str, Any]]:
    """One row per output: the stained input, each baseline, the raw model and each compared smoothing."""
    rows = []
    outputs = [("stained input", "stained")] + [(LABELS[name], f"baseline_{name}") for name in baselines]
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


def write_test_outputs(module: RestorationModule, spec: RunSpec, output_dir: Path) -> list[tuple[str, Path]]:
    """Per-clip CSV, comparison table, side-by-side GIF/mp4, per-frame plot, as (artifact folder, file)."""
    out = output_dir / "test"
    out.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, Path]] = []
    if module.records:
        files.append(("test", _write_csv(out / "test_clips.csv", module.records)))
        rows = comparison_table(module.test_summary, spec.model.name, spec.top.compare_smoothing, spec.top.compare_baselines)
        files.append(("test", _write_csv(out / "comparison.csv", rows)))
        md = out / "comparison.md"
        write_text(md, markdown_table(rows))
        files.append(("test", md))
    if module.preview:
        panels = {"clean": module.preview["clean"], "stained": module.preview["stained"],
                  "restored": module.preview["raw"], f"smoothed ({spec.smoothing.name})": module.preview["smoothed"]}
        video = side_by_side(panels, spec.preview.scale)
        fps = getattr(spec.dataset, "fps", 24.0)
        files.append(("previews", write_gif(out / "preview.gif", video, fps)))
        files.append(("previews", write_video(out / "preview.mp4", video, fps)))
        files.append(("previews", plot_curves(module.curves, out / "per_frame.png")))
    return files


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; returns ``optimized_metric`` (best validation value)."""
    spec = validate(cfg)  # everything a user can get wrong fails here, before any file or run exists
    kwargs = trainer_kwargs(cfg)
    optimizer = checked_optimizer(cfg)
    resumed_run = tracking.checkpoint_run_id(spec.top.ckpt_path) if spec.top.ckpt_path else None
    root, output_dir = job_dirs(cfg)
    L.seed_everything(spec.top.seed, workers=True)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    module = module_from_spec(spec, optimizer, scheduler)
    datamodule = RestorationDataModule(spec.dataset, build_corruption(spec.corruption), spec.model.context_frames, model_window(spec.model))

    logger = None
    if isinstance(spec.logger, MlflowLoggerConfig):
        logger = tracking.build_logger(spec.logger, root, output_dir, {"task": "restoration"},
                                       tracking.reusable_run(spec.logger, root, resumed_run))
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints", filename="best", monitor=spec.top.optimized_metric,
        mode=spec.top.optimized_mode, save_last=True,
    )
    callbacks = [checkpoint, OnExceptionCheckpoint(output_dir / "checkpoints", "interrupted"), StopOnSignal(),
                 UndefinedMetricWarning(spec.top.optimized_metric), tracking.RunIdInCheckpoint()]
    if logger:
        callbacks.append(LearningRateMonitor("epoch"))
    trainer = L.Trainer(**kwargs, logger=logger or False, callbacks=callbacks, default_root_dir=str(output_dir))
    on_stop_say(f"resume with ckpt_path={output_dir / 'checkpoints' / 'interrupted.ckpt'}")
    if logger is not None:
        tracking.log_config(logger.experiment, logger.run_id, cfg, output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=spec.top.ckpt_path)
    best = checkpoint.best_model_path if checkpoint.best_model_path and Path(checkpoint.best_model_path).exists() else None
    trainer.test(module, datamodule=datamodule, ckpt_path=best)
    files = write_test_outputs(module, spec, output_dir)
    if logger is not None:
        if spec.logger.log_checkpoint and best:
            files.append(("checkpoints", Path(best)))
        tracking.log_artifacts(logger.experiment, logger.run_id, files)
        logger.finalize("success")
    if checkpoint.best_model_score is not None and math.isfinite(float(checkpoint.best_model_score)):
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(spec.top.optimized_metric)
    return None if value is None else float(value)

