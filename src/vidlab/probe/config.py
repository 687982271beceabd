"""The anomaly probe's schemas (``train.py experiment=probe``)."""

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
    build_choice,
    build_node,
    require,
    resolved,
    trainer_config,
)


@dataclass
class ProbeModelConfig:
    name: str = "linear_probe"
    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        require(self.hidden >= 1, f"hidden must be >= 1 (got {self.hidden})")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")


@dataclass
class ProbeConfig:
    batch_size: int = 256
    num_workers: int = 0
    class_weight: str = "auto"
    annotations: Optional[str] = None

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        require(self.class_weight in ("auto", "none"), f"class_weight must be auto or none (got {self.class_weight!r})")


@dataclass
class ProbeSpec:
    embeddings: str
    model: ProbeModelConfig
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
    model = build_choice(cfg, "model", {"linear_probe": ProbeModelConfig, "mlp_probe": ProbeModelConfig})
    seed = resolved(cfg, "seed")
    if not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer (got {seed!r})")
    return ProbeSpec(
        embeddings=embeddings, model=model, probe=build_node("probe", ProbeConfig, resolved(cfg, "probe") or {}),
        trainer=trainer_config(cfg), logger=build_choice(cfg, "logger", LOGGERS),
        seed=seed, optimized_metric=str(resolved(cfg, "optimized_metric")), optimizer=cfg.optimizer,
    )
