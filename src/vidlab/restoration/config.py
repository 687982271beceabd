"""The restoration task's config (``train.py``) checked before any data or model work: each group's
choice by its registry (the schemas live beside their classes), loss, preview and the top-level keys."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.registry import Registry
from vidlab.restoration.corruption import CORRUPTIONS
from vidlab.restoration.datasets import DATASETS, ClipLoaderConfig
from vidlab.restoration.nets import MODELS, ModelConfig
from vidlab.restoration.smoothing import SMOOTHINGS
from vidlab.schema import (
    LOGGERS,
    Choice,
    MlflowLoggerConfig,
    NoLoggerConfig,
    TrainerConfig,
    at_least,
    build_choice,
    build_node,
    one_of,
    refuse_unknown_keys,
    require,
    resolved,
    seeds,
    trainer_config,
)

log = logging.getLogger(__name__)

VARIANTS = ("stained", "raw", "smoothed")  # the input (baseline), the network's output, after smoothing
METRICS = ("psnr_content_stain", "psnr_stain", "psnr", "ssim", "flicker", "flicker_stain")  # restoration/metrics.py
BASELINES = {  # the reference restorations of restoration/baselines.py, by name, as the comparison table labels them
    "inpaint_telea": "OpenCV inpainting, Telea (true mask)",
    "inpaint_ns": "OpenCV inpainting, Navier-Stokes (true mask)",
    "clip_minimum": "clip-minimum blind inverse",
    "true_inverse": "analytic inverse (true mask: the ceiling)",
}



# ---------------------------------------------------------------- loss, logger, trainer, top level
@dataclass
class LossConfig:
    stain_weight: float
    ssim_weight: float
    mask_weight: float
    inverse_weight: float

    def __post_init__(self) -> None:
        for key in ("stain_weight", "ssim_weight", "mask_weight", "inverse_weight"):
            value = getattr(self, key)
            require(0 <= value < math.inf, f"{key} must be a finite number >= 0 (got {value})")


@dataclass
class PreviewConfig:
    clip: int
    scale: int
    every_n_epochs: int

    def __post_init__(self) -> None:
        at_least(0, self, "clip")
        at_least(1, self, "every_n_epochs")
        require(1 <= self.scale <= 8, f"scale must be in [1, 8] (got {self.scale})")


@dataclass
class TopLevelConfig:
    seed: int
    optimized_metric: str
    optimized_mode: str
    compare_smoothing: list[str]
    compare_baselines: list[str]
    ckpt_path: Optional[str]

    def __post_init__(self) -> None:
        one_of(self, "optimized_mode", "max", "min")
        seeds(self, "seed")
        unknown = set(self.compare_smoothing) - set(SMOOTHINGS.names())
        require(not unknown, f"compare_smoothing: unknown choices {sorted(unknown)}")
        unknown = set(self.compare_baselines) - set(BASELINES)
        require(not unknown, f"compare_baselines: unknown choices {sorted(unknown)} (choose from {list(BASELINES)})")


GROUPS: tuple[Registry, ...] = (DATASETS, CORRUPTIONS, MODELS, SMOOTHINGS, LOGGERS)  # the task's choices
FIXED_SCHEMAS: dict[str, type] = {"loss": LossConfig, "preview": PreviewConfig}


@dataclass
class RunSpec:
    """The validated, typed view of a composed config."""

    dataset: ClipLoaderConfig
    corruption: Choice
    model: ModelConfig
    smoothing: Choice
    logger: MlflowLoggerConfig | NoLoggerConfig
    loss: LossConfig
    preview: PreviewConfig
    trainer: TrainerConfig
    top: TopLevelConfig
    optimizer: DictConfig
    scheduler: DictConfig | None


def model_window(model: ModelConfig) -> int | None:
    """Frames the model reads at once to estimate the stain; None for a per-frame model."""
    return getattr(model, "window", None)


# A stain metric has no pixel to score without a stain: its whole-frame counterpart stands in.
STAIN_METRIC_FALLBACK = {"psnr_content_stain": "psnr", "psnr_stain": "psnr", "flicker_stain": "flicker"}


def restoration_metric(metric: str, stained: bool) -> str:
    """The validation metric to monitor and return: ``val/<variant>/<metric>``, checked here so a typo
    fails before training, not after the first epoch. With ``corruption=none`` a stain metric is
    undefined, so its whole-frame counterpart is used (said once in the log)."""
    parts = metric.split("/")
    if len(parts) != 3 or parts[0] != "val" or parts[1] not in VARIANTS or parts[2] not in METRICS:
        raise ConfigError(
            f"optimized_metric: must be val/<{'|'.join(VARIANTS)}>/<{'|'.join(METRICS)}> (got {metric!r})"
        )
    if not stained and parts[2] in STAIN_METRIC_FALLBACK:
        fallback = f"val/{parts[1]}/{STAIN_METRIC_FALLBACK[parts[2]]}"
        log.warning("optimized_metric: %s is undefined without a stain (corruption=none); using %s", metric, fallback)
        return fallback
    return metric


def validate(cfg: DictConfig) -> RunSpec:
    """Check the whole composed config; raise :class:`ConfigError` on the first bad value."""
    refuse_unknown_keys(cfg, [*(set(RunSpec.__dataclass_fields__) - {"top"}), *TopLevelConfig.__dataclass_fields__])
    nodes: dict[str, Any] = {registry.group: build_choice(cfg, registry) for registry in GROUPS}
    for key, schema in FIXED_SCHEMAS.items():
        nodes[key] = build_node(key, schema, resolved(cfg, key) or {})
    nodes["trainer"] = trainer_config(cfg)
    top = {k: resolved(cfg, k) for k in TopLevelConfig.__dataclass_fields__ if k in cfg}
    nodes["top"] = build_node("", TopLevelConfig, top)
    if "optimizer" not in cfg or "_target_" not in cfg.optimizer:
        raise ConfigError("optimizer: needs a _target_ (e.g. optimizer=adamw)")
    corruption = CORRUPTIONS.build(nodes["corruption"])
    nodes["top"] = replace(nodes["top"], optimized_metric=restoration_metric(nodes["top"].optimized_metric,
                                                                             stained=corruption.stains))
    spec = RunSpec(**nodes, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"))
    window = model_window(spec.model)
    if window is not None and getattr(spec.dataset, "clip_seconds", None) is None and spec.dataset.clip_frames < window:
        raise ConfigError(f"model.window: {window} frames do not fit the dataset's clips of {spec.dataset.clip_frames} "
                          "frames (dataset.clip_frames)")
    if spec.dataset.frame_size is not None:
        try:
            corruption.check_frame(*spec.dataset.frame_size)
        except ValueError as err:
            raise ConfigError(f"corruption: {err}") from None
    return spec


