"""The restoration task's schemas (``train.py``): dataset, corruption, model, smoothing, loss,
preview and the top-level keys, checked before any data or model work."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.schema import (
    LOGGERS,
    MlflowLoggerConfig,
    NoLoggerConfig,
    TrainerConfig,
    build_choice,
    build_node,
    check_range,
    require,
    resolved,
    trainer_config,
)


# ---------------------------------------------------------------- dataset
@dataclass
class ClipLoaderConfig:
    """What every restoration dataset shares: how clips are cut, batched and sampled."""

    name: str = "???"
    clip_frames: int = 16
    batch_size: int = 16
    samples_per_clip: int = 8
    num_workers: int = 1
    shuffle_buffer: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.clip_frames >= 2, f"clip_frames must be >= 2 (got {self.clip_frames})")
        require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        require(self.samples_per_clip >= 1, f"samples_per_clip must be >= 1 (got {self.samples_per_clip})")
        require(self.num_workers >= 0, f"num_workers must be >= 0 (got {self.num_workers})")
        require(self.shuffle_buffer >= 1, f"shuffle_buffer must be >= 1 (got {self.shuffle_buffer})")


@dataclass
class MovingDigitsConfig(ClipLoaderConfig):
    cache_dir: str = "data/moving_digits"
    height: int = 72
    width: int = 128
    fps: float = 24.0
    frames_per_video: int = 48
    train_videos: int = 48
    val_videos: int = 6
    test_videos: int = 8
    min_digits: int = 1
    max_digits: int = 3
    digit_size: int = 28
    speed_range: list[float] = field(default_factory=lambda: [1.0, 3.0])
    mnist_path: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.height >= 8 and self.width >= 8, f"height and width must be >= 8 (got {self.height}x{self.width})")
        require(self.fps > 0, f"fps must be > 0 (got {self.fps})")
        require(
            self.frames_per_video >= self.clip_frames,
            f"frames_per_video ({self.frames_per_video}) must be >= clip_frames ({self.clip_frames})",
        )
        for split in ("train", "val", "test"):
            count = getattr(self, f"{split}_videos")
            require(count >= 1, f"{split}_videos must be >= 1 (got {count})")
        require(1 <= self.min_digits <= self.max_digits, f"need 1 <= min_digits <= max_digits (got {self.min_digits}, {self.max_digits})")
        require(
            0 < self.digit_size < min(self.height, self.width),
            f"digit_size must be in (0, {min(self.height, self.width)}) (got {self.digit_size})",
        )
        check_range("speed_range", self.speed_range, 0.0)


@dataclass
class VideoFolderConfig(ClipLoaderConfig):
    path: str = "???"
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".avi", ".mkv", ".mov", ".mpg"])
    clip_seconds: Optional[float] = None
    resize: Optional[list[int]] = None
    split_ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.clip_seconds is None or self.clip_seconds > 0, f"clip_seconds must be > 0 (got {self.clip_seconds})")
        require(
            self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 8),
            f"resize must be null or [height, width] >= 8 (got {self.resize})",
        )
        require(
            len(self.split_ratios) == 3 and min(self.split_ratios) >= 0 and abs(sum(self.split_ratios) - 1) < 1e-6,
            f"split_ratios must be three non-negative numbers summing to 1 (got {self.split_ratios})",
        )


# ---------------------------------------------------------------- corruption
@dataclass
class CircularStainConfig:
    name: str = "circular_stain"
    radius: int = 25
    opacity: float = 1.0
    hardness: float = 0.8
    tint: float = 0.3

    def __post_init__(self) -> None:
        require(self.radius >= 1, f"radius must be >= 1 (got {self.radius})")
        require(0 <= self.opacity <= 1, f"opacity must be in [0, 1] (got {self.opacity})")
        require(self.hardness > 0, f"hardness must be > 0 (got {self.hardness})")
        require(0 <= self.tint <= 1, f"tint must be in [0, 1] (got {self.tint})")

    @property
    def max_radius(self) -> float:
        return self.radius


@dataclass
class MultiStainConfig:
    name: str = "multi_stain"
    min_stains: int = 1
    max_stains: int = 3
    radius_range: list[float] = field(default_factory=lambda: [8.0, 20.0])
    opacity_range: list[float] = field(default_factory=lambda: [0.6, 1.0])
    hardness_range: list[float] = field(default_factory=lambda: [0.5, 1.5])
    tint_range: list[float] = field(default_factory=lambda: [0.0, 0.6])
    aspect_range: list[float] = field(default_factory=lambda: [0.5, 1.0])

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
class NoCorruptionConfig:
    name: str = "none"

    @property
    def max_radius(self) -> float:
        return 0.0


# ---------------------------------------------------------------- model
@dataclass
class UNetConfig:
    name: str = "unet"
    frames: int = 1
    depth: int = 3
    base_channels: int = 16
    norm: str = "batch"
    mask_channel: bool = False
    residual: bool = True

    def __post_init__(self) -> None:
        require(self.frames >= 1 and self.frames % 2 == 1, f"frames must be odd and >= 1 (got {self.frames})")
        require(1 <= self.depth <= 6, f"depth must be in [1, 6] (got {self.depth})")
        require(self.base_channels >= 1, f"base_channels must be >= 1 (got {self.base_channels})")
        require(self.norm in ("batch", "group", "instance", "none"), f"norm must be batch, group, instance or none (got {self.norm!r})")


# ---------------------------------------------------------------- smoothing
@dataclass
class NoSmoothingConfig:
    name: str = "none"


@dataclass
class EmaSmoothingConfig:
    name: str = "ema"
    alpha: float = 0.5

    def __post_init__(self) -> None:
        require(0 < self.alpha <= 1, f"alpha must be in (0, 1] (got {self.alpha})")


def _check_window(frames: int, sigma: float) -> None:
    require(frames >= 1 and frames % 2 == 1, f"frames must be odd and >= 1 (got {frames})")
    require(sigma > 0, f"sigma must be > 0 (got {sigma})")


@dataclass
class WindowSmoothingConfig:
    name: str = "window"
    frames: int = 3
    kernel: str = "gaussian"
    sigma: float = 1.0

    def __post_init__(self) -> None:
        _check_window(self.frames, self.sigma)
        require(self.kernel in ("box", "gaussian"), f"kernel must be box or gaussian (got {self.kernel!r})")


@dataclass
class MaskedSmoothingConfig:
    name: str = "masked"
    frames: int = 5
    sigma: float = 1.5
    value_sigma: float = 0.08
    change_threshold: float = 0.02

    def __post_init__(self) -> None:
        _check_window(self.frames, self.sigma)
        require(self.value_sigma > 0, f"value_sigma must be > 0 (got {self.value_sigma})")
        require(0 <= self.change_threshold < 1, f"change_threshold must be in [0, 1) (got {self.change_threshold})")


# ---------------------------------------------------------------- loss, logger, trainer, top level
@dataclass
class LossConfig:
    stain_weight: float = 4.0
    ssim_weight: float = 0.0

    def __post_init__(self) -> None:
        require(0 <= self.stain_weight < math.inf, f"stain_weight must be a finite number >= 0 (got {self.stain_weight})")
        require(0 <= self.ssim_weight < math.inf, f"ssim_weight must be a finite number >= 0 (got {self.ssim_weight})")


@dataclass
class PreviewConfig:
    clip: int = 0
    scale: int = 2

    def __post_init__(self) -> None:
        require(self.clip >= 0, f"clip must be >= 0 (got {self.clip})")
        require(1 <= self.scale <= 8, f"scale must be in [1, 8] (got {self.scale})")


@dataclass
class TopLevelConfig:
    seed: int = 0
    optimized_metric: str = "val/smoothed/psnr_content_stain"
    optimized_mode: str = "max"
    compare_smoothing: list[str] = field(default_factory=lambda: ["none", "ema", "window", "masked"])
    ckpt_path: Optional[str] = None

    def __post_init__(self) -> None:
        require(self.optimized_mode in ("max", "min"), f"optimized_mode must be max or min (got {self.optimized_mode!r})")
        unknown = set(self.compare_smoothing) - set(SCHEMAS["smoothing"])
        require(not unknown, f"compare_smoothing: unknown choices {sorted(unknown)}")


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"moving_digits": MovingDigitsConfig, "video_folder": VideoFolderConfig},
    "corruption": {"circular_stain": CircularStainConfig, "multi_stain": MultiStainConfig, "none": NoCorruptionConfig},
    "model": {"unet": UNetConfig, "unet_temporal": UNetConfig},
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
    model: UNetConfig
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
    return build_node("smoothing", SCHEMAS["smoothing"][name], overrides or {"name": name})


def validate(cfg: DictConfig) -> RunSpec:
    """Check the whole composed config; raise :class:`ConfigError` on the first bad value."""
    from vidlab.restoration.metrics import restoration_metric  # torch: not needed by restore's quick checks

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
    if isinstance(spec.dataset, MovingDigitsConfig):
        size = min(spec.dataset.height, spec.dataset.width)
        if 2 * spec.corruption.max_radius >= size:
            raise ConfigError(
                f"corruption: radius {spec.corruption.max_radius} does not fit a "
                f"{spec.dataset.height}x{spec.dataset.width} frame (needs 2*radius < {size})"
            )
    return spec


