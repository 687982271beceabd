"""The anomaly probe's schemas (``train.py task=probe``), one per ``conf/probe/<name>.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.schema import (
    LOGGERS,
    SEED_MAX,
    Choice,
    MlflowLoggerConfig,
    NoLoggerConfig,
    TrainerConfig,
    at_least,
    build_choice,
    one_of,
    require,
    resolved,
    trainer_config,
)


@dataclass
class ProbeConfig(Choice):
    """What every probe has: the temporal annotation file that frame-level scores are read against."""

    annotations: Optional[str]  # UCF-Crime's Temporal_Anomaly_Annotation_for_Testing_Videos.txt format


@dataclass
class LogisticConfig(ProbeConfig):
    """L2-regularised logistic regression solved to convergence (L-BFGS), ``C`` chosen on val."""

    C_grid: list[float]
    max_iter: int
    tol: float
    class_weight: str

    def __post_init__(self) -> None:
        require(len(self.C_grid) > 0 and all(c > 0 for c in self.C_grid), f"C_grid must be positive values (got {self.C_grid})")
        at_least(1, self, "max_iter")
        require(self.tol > 0, f"tol must be > 0 (got {self.tol})")
        one_of(self, "class_weight", "auto", "none")


@dataclass
class MlpConfig(ProbeConfig):
    """A Lightning MLP on clip embeddings, stopped early on val ROC-AUC."""

    hidden: int
    dropout: float
    batch_size: int
    patience: int
    class_weight: str

    def __post_init__(self) -> None:
        at_least(1, self, "hidden", "batch_size", "patience")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")
        one_of(self, "class_weight", "auto", "none")


@dataclass
class MilRankingConfig(ProbeConfig):
    """Sultani et al.'s multiple-instance ranking on video-level labels."""

    segments: int
    hidden: list[int]
    dropout: float
    smoothness: float
    sparsity: float
    videos_per_batch: int
    steps_per_epoch: int
    patience: int

    def __post_init__(self) -> None:
        at_least(1, self, "segments", "videos_per_batch", "steps_per_epoch", "patience")
        require(len(self.hidden) > 0 and all(h >= 1 for h in self.hidden), f"hidden must be positive widths (got {self.hidden})")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")
        require(self.smoothness >= 0 and self.sparsity >= 0, "smoothness and sparsity must be >= 0")


SELECTION_METRICS = ("val/roc_auc", "val/ap", "val/balanced_accuracy", "val/f1", "val/video_roc_auc")  # what a sweep may maximise
PROBES: dict[str, type] = {"logistic": LogisticConfig, "mlp": MlpConfig, "mil_ranking": MilRankingConfig}


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
    embeddings = resolved(cfg, "embeddings")
    if not isinstance(embeddings, str) or not embeddings:
        raise ConfigError(f"embeddings: an extraction output folder or its MLflow run id (got {embeddings!r})")
    metric = resolved(cfg, "optimized_metric")
    if metric not in SELECTION_METRICS:
        raise ConfigError(f"optimized_metric: {metric!r} is not a val metric of the probe (choose one of {', '.join(SELECTION_METRICS)})")
    seed = resolved(cfg, "seed")
    if not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed: must be an integer in [0, {SEED_MAX}] (got {seed!r})")
    return ProbeSpec(
        embeddings=embeddings, probe=build_choice(cfg, "probe", PROBES),
        trainer=trainer_config(cfg), logger=build_choice(cfg, "logger", LOGGERS),
        seed=seed, optimized_metric=metric, run_name=resolved(cfg, "run_name"),
    )
