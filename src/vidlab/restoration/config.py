"""The restoration task's schemas (``train.py``): dataset, corruption, model, smoothing, loss,
preview and the top-level keys, checked before any data or model work."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.restoration.sources import MovingDigitsConfig, VideoFolderConfig  # schemas beside the module that reads them
from vidlab.schema import (
    LOGGERS,
    Choice,
    MlflowLoggerConfig,
    NoLoggerConfig,
    TrainerConfig,
    at_least,
    build_choice,
    build_node,
    check_range,
    choice_values,
    one_of,
    require,
    resolved,
    seeds,
    trainer_config,
    within,
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



# ---------------------------------------------------------------- corruption
@dataclass
class CircularStainConfig(Choice):
    radius: int
    opacity: float
    hardness: float
    tint: float
    colour: Optional[list[float]]

    def __post_init__(self) -> None:
        within(0, 1, self, "opacity", "tint")
        require(self.hardness > 0, f"hardness must be > 0 (got {self.hardness})")
        at_least(1, self, "radius")
        require(self.colour is None or (len(self.colour) == 3 and all(0 <= c <= 1 for c in self.colour)),
                f"colour must be null or [r, g, b] in [0, 1] (got {self.colour})")

    @property
    def max_radius(self) -> float:
        return self.radius


@dataclass
class MultiStainConfig(Choice):
    min_stains: int
    max_stains: int
    radius_range: list[float]
    opacity_range: list[float]
    hardness_range: list[float]
    tint_range: list[float]
    aspect_range: list[float]

    def __post_init__(self) -> None:
        require(1 <= self.min_stains <= self.max_stains, f"need 1 <= min_stains <= max_stains (got {self.min_stains}, {self.max_stains})")
        check_range("radius_range", self.radius_range, 1.0)
        check_range("opacity_range", self.opacity_range, 0.0, 1.0)
        check_range("hardness_range", self.hardness_range, 1e-6)
        check_range("tint_range", self.tint_range, 0.0, 1.0)
        check_range("aspect_range", self.aspect_range, 0.05, 1.0)

    @property
    def max_radius(self) -> float:
        return self.radius_range[1]


@dataclass
class NoCorruptionConfig(Choice):

    @property
    def max_radius(self) -> float:
        return 0.0


# ---------------------------------------------------------------- model
@dataclass
class ModelConfig(Choice):
    """What every restoration model has: U-Net shape and the stained frames each output frame sees."""

    context_frames: int
    depth: int
    base_channels: int
    norm: str

    def __post_init__(self) -> None:
        require(self.context_frames >= 1 and self.context_frames % 2 == 1, f"context_frames must be odd and >= 1 (got {self.context_frames})")
        require(1 <= self.depth <= 6, f"depth must be in [1, 6] (got {self.depth})")
        at_least(1, self, "base_channels")
        one_of(self, "norm", "batch", "group", "instance", "none")


def model_window(model: ModelConfig) -> int | None:
    """Frames the model reads at once to estimate the stain; None for a per-frame model."""
    return getattr(model, "window", None)


@dataclass
class UNetConfig(ModelConfig):
    mask_channel: bool
    residual: bool


@dataclass
class BlendUNetConfig(ModelConfig):
    window: int  # frames one stain estimate reads: training windows, evaluation and restore segments
    min_gain: float
    stain: Any  # the corruption's node: a circular stain is fitted (its centre searched); others, or null, learned

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(2, self, "window")
        require(0 < self.min_gain < 1, f"min_gain must be in (0, 1) (got {self.min_gain})")


# ---------------------------------------------------------------- smoothing
@dataclass
class NoSmoothingConfig(Choice):
    """No parameters."""


@dataclass
class EmaSmoothingConfig(Choice):
    alpha: float

    def __post_init__(self) -> None:
        require(0 < self.alpha <= 1, f"alpha must be in (0, 1] (got {self.alpha})")


@dataclass
class TimeWindowConfig(Choice):
    """What the centred smoothings share: an odd window of frames, a Gaussian width in frames."""

    window: int
    sigma: float

    def __post_init__(self) -> None:
        require(self.window >= 1 and self.window % 2 == 1, f"window must be odd and >= 1 (got {self.window})")
        require(self.sigma > 0, f"sigma must be > 0 (got {self.sigma})")


@dataclass
class WindowSmoothingConfig(TimeWindowConfig):
    kernel: str

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self, "kernel", "box", "gaussian")


@dataclass
class MaskedSmoothingConfig(TimeWindowConfig):
    value_sigma: float
    change_threshold: float

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.value_sigma > 0, f"value_sigma must be > 0 (got {self.value_sigma})")
        require(0 <= self.change_threshold < 1, f"change_threshold must be in [0, 1) (got {self.change_threshold})")


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
        unknown = set(self.compare_smoothing) - set(SCHEMAS["smoothing"])
        require(not unknown, f"compare_smoothing: unknown choices {sorted(unknown)}")
        unknown = set(self.compare_baselines) - set(BASELINES)
        require(not unknown, f"compare_baselines: unknown choices {sorted(unknown)} (choose from {list(BASELINES)})")


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"moving_digits": MovingDigitsConfig, "video_folder": VideoFolderConfig},
    "corruption": {"circular_stain": CircularStainConfig, "multi_stain": MultiStainConfig, "none": NoCorruptionConfig},
    "model": {"unet": UNetConfig, "unet_temporal": UNetConfig, "blend_unet": BlendUNetConfig},
    "smoothing": {
        "none": NoSmoothingConfig,
        "ema": EmaSmoothingConfig,
        "window": WindowSmoothingConfig,
        "masked": MaskedSmoothingConfig,
    },
    "logger": LOGGERS,
}
FIXED_SCHEMAS: dict[str, type] = {"loss": LossConfig, "preview": PreviewConfig}


@dataclass
class RunSpec:
    """The validated, typed view of a composed config."""

    dataset: MovingDigitsConfig | VideoFolderConfig
    corruption: CircularStainConfig | MultiStainConfig | NoCorruptionConfig
    model: UNetConfig | BlendUNetConfig
    smoothing: NoSmoothingConfig | EmaSmoothingConfig | WindowSmoothingConfig | MaskedSmoothingConfig
    logger: MlflowLoggerConfig | NoLoggerConfig
    loss: LossConfig
    preview: PreviewConfig
    trainer: TrainerConfig
    top: TopLevelConfig
    optimizer: DictConfig
    scheduler: DictConfig | None


def build_smoothing_config(name: str, overrides: Any = None) -> Any:
    """A smoothing choice's typed config, from its defaults (and optional overrides)."""
    return build_node("smoothing", SCHEMAS["smoothing"][name], {**choice_values("smoothing", name), **(overrides or {})})


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
    nodes: dict[str, Any] = {group: build_choice(cfg, group, choices) for group, choices in SCHEMAS.items()}
    for key, schema in FIXED_SCHEMAS.items():
        nodes[key] = build_node(key, schema, resolved(cfg, key) or {})
    nodes["trainer"] = trainer_config(cfg)
    top = {k: resolved(cfg, k) for k in TopLevelConfig.__dataclass_fields__ if k in cfg}
    nodes["top"] = build_node("", TopLevelConfig, top)
    if "optimizer" not in cfg or "_target_" not in cfg.optimizer:
        raise ConfigError("optimizer: needs a _target_ (e.g. optimizer=adamw)")
    nodes["top"] = replace(nodes["top"], optimized_metric=restoration_metric(nodes["top"].optimized_metric, stained=not isinstance(nodes["corruption"], NoCorruptionConfig)))
    spec = RunSpec(**nodes, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"))
    window = model_window(spec.model)
    if window is not None and getattr(spec.dataset, "clip_seconds", None) is None and spec.dataset.clip_frames < window:
        raise ConfigError(f"model.window: {window} frames do not fit the dataset's clips of {spec.dataset.clip_frames} frames (dataset.clip_frames)")
    if isinstance(spec.dataset, MovingDigitsConfig):
        size = min(spec.dataset.height, spec.dataset.width)
        if 2 * spec.corruption.max_radius >= size:
            raise ConfigError(
                f"corruption: radius {spec.corruption.max_radius} does not fit a "
                f"{spec.dataset.height}x{spec.dataset.width} frame (needs 2*radius < {size})"
            )
    return spec


