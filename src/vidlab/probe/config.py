"""The anomaly probe's schemas (``train.py task=probe``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.schema import (
    LOGGERS,
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
class ProbeConfig:
    """``conf/probe/<name>.yaml``: the classifier and how it is trained and scored."""

    name: str
    hidden: int
    dropout: float
    batch_size: int
    num_workers: int
    class_weight: str
    annotations: Optional[str]

    def __post_init__(self) -> None:
        at_least(1, self, "hidden")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")
        at_least(1, self, "batch_size")
        one_of(self, "class_weight", "auto", "none")


PROBES: dict[str, type] = {"linear": ProbeConfig, "mlp": ProbeConfig}


@dataclass
class ProbeSpec:
    embeddings: str
    probe: ProbeConfig
    trainer: TrainerConfig
    logger: MlflowLoggerConfig | NoLoggerConfig
    seed: int
    optimized_metric: str
    optimizer: DictConfig


def validate_probe(cfg: DictConfig) -> ProbeSpec:
    embeddings = resolved(cfg, "embeddings")
    if not isinstance(embeddings, str) or not embeddings:
        raise ConfigError(f"embeddings: an extraction output folder or its MLflow run id (got {embeddings!r})")
    seed = resolved(cfg, "seed")
    if not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer (got {seed!r})")
    return ProbeSpec(
        embeddings=embeddings, probe=build_choice(cfg, "probe", PROBES),
        trainer=trainer_config(cfg), logger=build_choice(cfg, "logger", LOGGERS),
        seed=seed, optimized_metric=str(resolved(cfg, "optimized_metric")), optimizer=cfg.optimizer,
    )
