"""The anomaly probe's config (``train.py task=probe``) checked before any work: the probe choice by
its registry (each probe's schema lives beside its class, one per ``conf/probe/<name>.yaml``), what
every probe's schema shares, and the task's own keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.registry import Registry
from vidlab.schema import (
    LOGGERS,
    SEED_MAX,
    Choice,
    MlflowLoggerConfig,
    NoLoggerConfig,
    TrainerConfig,
    build_choice,
    refuse_unknown_keys,
    resolved,
    trainer_config,
)


@dataclass
class ProbeConfig(Choice):
    """What every probe has: the temporal annotation file that frame-level scores are read against."""

    annotations: Optional[str]  # UCF-Crime's Temporal_Anomaly_Annotation_for_Testing_Videos.txt format

    SETTINGS = ("annotations",)  # read by the task (frame-level scores), not an argument of the probe


# what a sweep may maximise
SELECTION_METRICS = ("val/roc_auc", "val/ap", "val/balanced_accuracy", "val/f1", "val/video_roc_auc")
# a module per probe: checking one imports it alone
PROBES = Registry("probe", builtins="vidlab.probe.{name}", base=ProbeConfig)


@dataclass
class ProbeSpec:
    embeddings: str
    probe: ProbeConfig
    trainer: TrainerConfig
    logger: MlflowLoggerConfig | NoLoggerConfig
    seed: int
    optimized_metric: str
    run_name: Optional[str]


def validate_probe(cfg: DictConfig) -> ProbeSpec:
    refuse_unknown_keys(cfg, [*ProbeSpec.__dataclass_fields__, "optimizer", "scheduler",
                              "ckpt_path"])  # the last: train.yaml's
    embeddings = resolved(cfg, "embeddings")
    if not isinstance(embeddings, str) or not embeddings:
        raise ConfigError(f"embeddings: an extraction output folder or its MLflow run id (got {embeddings!r})")
    metric = resolved(cfg, "optimized_metric")
    if metric not in SELECTION_METRICS:
        raise ConfigError(f"optimized_metric: {metric!r} is not a val metric of the probe "
                          f"(choose one of {', '.join(SELECTION_METRICS)})")
    seed = resolved(cfg, "seed")
    if not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed: must be an integer in [0, {SEED_MAX}] (got {seed!r})")
    return ProbeSpec(
        embeddings=embeddings, probe=build_choice(cfg, PROBES),
        trainer=trainer_config(cfg), logger=build_choice(cfg, LOGGERS),
        seed=seed, optimized_metric=metric, run_name=resolved(cfg, "run_name"),
    )
