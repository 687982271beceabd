"""The restoration task (``train.py``, the default ``task``): validate, build, fit, test, log; return the metric."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig

from vidlab import tracking
from vidlab.jobs import job_dirs
from vidlab.preemption import requeued_checkpoint
from vidlab.restoration.checkpoints import check_resume
from vidlab.restoration.config import RunSpec, model_window
from vidlab.restoration.corruption import CORRUPTIONS
from vidlab.restoration.datamodule import RestorationDataModule
from vidlab.restoration.loading import load_module
from vidlab.restoration.module import ClipRestorer, RestorationModule, module_from_spec
from vidlab.restoration.previews import ValidationPreviewImages
from vidlab.restoration.results import description, log_test_outputs, write_test_outputs
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
