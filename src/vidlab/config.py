"""Typed schemas for every config group, checked before any data or model work.

Each group node carries ``name`` (its choice); :func:`validate` merges it into that choice's
dataclass (wrong type or unknown key fails), then builds the dataclass so ``__post_init__`` checks
ranges. Every failure is one :class:`ConfigError` line that names the full key.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidlab.errors import ConfigError

log = logging.getLogger(__name__)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_range(name: str, pair: list[float], low: float, high: float | None = None) -> None:
    _require(len(pair) == 2 and pair[0] <= pair[1], f"{name} must be [min, max] with min <= max (got {pair})")
    _require(pair[0] >= low, f"{name} must be >= {low} (got {pair})")
    _require(high is None or pair[1] <= high, f"{name} must be <= {high} (got {pair})")


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
        _require(self.clip_frames >= 2, f"clip_frames must be >= 2 (got {self.clip_frames})")
        _require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        _require(self.samples_per_clip >= 1, f"samples_per_clip must be >= 1 (got {self.samples_per_clip})")
        _require(self.num_workers >= 0, f"num_workers must be >= 0 (got {self.num_workers})")
        _require(self.shuffle_buffer >= 1, f"shuffle_buffer must be >= 1 (got {self.shuffle_buffer})")


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
        _require(self.height >= 8 and self.width >= 8, f"height and width must be >= 8 (got {self.height}x{self.width})")
        _require(self.fps > 0, f"fps must be > 0 (got {self.fps})")
        _require(
            self.frames_per_video >= self.clip_frames,
            f"frames_per_video ({self.frames_per_video}) must be >= clip_frames ({self.clip_frames})",
        )
        for split in ("train", "val", "test"):
            count = getattr(self, f"{split}_videos")
            _require(count >= 1, f"{split}_videos must be >= 1 (got {count})")
        _require(1 <= self.min_digits <= self.max_digits, f"need 1 <= min_digits <= max_digits (got {self.min_digits}, {self.max_digits})")
        _require(
            0 < self.digit_size < min(self.height, self.width),
            f"digit_size must be in (0, {min(self.height, self.width)}) (got {self.digit_size})",
        )
        _check_range("speed_range", self.speed_range, 0.0)


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
        _require(self.clip_seconds is None or self.clip_seconds > 0, f"clip_seconds must be > 0 (got {self.clip_seconds})")
        _require(
            self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 8),
            f"resize must be null or [height, width] >= 8 (got {self.resize})",
        )
        _require(
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
        _require(self.radius >= 1, f"radius must be >= 1 (got {self.radius})")
        _require(0 <= self.opacity <= 1, f"opacity must be in [0, 1] (got {self.opacity})")
        _require(self.hardness > 0, f"hardness must be > 0 (got {self.hardness})")
        _require(0 <= self.tint <= 1, f"tint must be in [0, 1] (got {self.tint})")

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
        _require(1 <= self.min_stains <= self.max_stains, f"need 1 <= min_stains <= max_stains (got {self.min_stains}, {self.max_stains})")
        _check_range("radius_range", self.radius_range, 1.0)
        _check_range("opacity_range", self.opacity_range, 0.0, 1.0)
        _check_range("hardness_range", self.hardness_range, 1e-6)
        _check_range("tint_range", self.tint_range, 0.0, 1.0)
        _check_range("aspect_range", self.aspect_range, 0.05, 1.0)

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
        _require(self.frames >= 1 and self.frames % 2 == 1, f"frames must be odd and >= 1 (got {self.frames})")
        _require(1 <= self.depth <= 6, f"depth must be in [1, 6] (got {self.depth})")
        _require(self.base_channels >= 1, f"base_channels must be >= 1 (got {self.base_channels})")
        _require(self.norm in ("batch", "group", "instance", "none"), f"norm must be batch, group, instance or none (got {self.norm!r})")


# ---------------------------------------------------------------- smoothing
@dataclass
class NoSmoothingConfig:
    name: str = "none"


@dataclass
class EmaSmoothingConfig:
    name: str = "ema"
    alpha: float = 0.5

    def __post_init__(self) -> None:
        _require(0 < self.alpha <= 1, f"alpha must be in (0, 1] (got {self.alpha})")


def _check_window(frames: int, sigma: float) -> None:
    _require(frames >= 1 and frames % 2 == 1, f"frames must be odd and >= 1 (got {frames})")
    _require(sigma > 0, f"sigma must be > 0 (got {sigma})")


@dataclass
class WindowSmoothingConfig:
    name: str = "window"
    frames: int = 3
    kernel: str = "gaussian"
    sigma: float = 1.0

    def __post_init__(self) -> None:
        _check_window(self.frames, self.sigma)
        _require(self.kernel in ("box", "gaussian"), f"kernel must be box or gaussian (got {self.kernel!r})")


@dataclass
class MaskedSmoothingConfig:
    name: str = "masked"
    frames: int = 5
    sigma: float = 1.5
    value_sigma: float = 0.08
    change_threshold: float = 0.02

    def __post_init__(self) -> None:
        _check_window(self.frames, self.sigma)
        _require(self.value_sigma > 0, f"value_sigma must be > 0 (got {self.value_sigma})")
        _require(0 <= self.change_threshold < 1, f"change_threshold must be in [0, 1) (got {self.change_threshold})")


# ---------------------------------------------------------------- loss, logger, trainer, top level
@dataclass
class LossConfig:
    stain_weight: float = 4.0
    ssim_weight: float = 0.0

    def __post_init__(self) -> None:
        _require(0 <= self.stain_weight < math.inf, f"stain_weight must be a finite number >= 0 (got {self.stain_weight})")
        _require(0 <= self.ssim_weight < math.inf, f"ssim_weight must be a finite number >= 0 (got {self.ssim_weight})")


@dataclass
class MlflowLoggerConfig:
    name: str = "mlflow"
    tracking_uri: str = "sqlite:///mlruns.db"
    artifact_location: str = "mlartifacts"
    experiment_name: str = "restoration"
    run_name: Optional[str] = None
    log_checkpoint: bool = True


@dataclass
class NoLoggerConfig:
    name: str = "none"


@dataclass
class TrainerConfig:
    """The Trainer arguments vidlab types; any other Lightning Trainer argument passes through."""

    accelerator: str = "cpu"
    devices: Any = 1
    precision: Any = "32-true"
    max_epochs: int = 1
    max_time: Optional[str] = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    log_every_n_steps: int = 10
    deterministic: Any = False

    def __post_init__(self) -> None:
        _require(self.max_epochs >= 1 or self.max_epochs == -1, f"max_epochs must be >= 1 or -1 (got {self.max_epochs})")
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            value = getattr(self, key)
            _require(value is None or (isinstance(value, (int, float)) and value >= 0), f"{key} must be a number >= 0 (got {value!r})")


@dataclass
class PreviewConfig:
    clip: int = 0
    scale: int = 2

    def __post_init__(self) -> None:
        _require(self.clip >= 0, f"clip must be >= 0 (got {self.clip})")
        _require(1 <= self.scale <= 8, f"scale must be in [1, 8] (got {self.scale})")


@dataclass
class TopLevelConfig:
    seed: int = 0
    optimized_metric: str = "val/smoothed/psnr_content_stain"
    optimized_mode: str = "max"
    compare_smoothing: list[str] = field(default_factory=lambda: ["none", "ema", "window", "masked"])
    ckpt_path: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.optimized_mode in ("max", "min"), f"optimized_mode must be max or min (got {self.optimized_mode!r})")
        unknown = set(self.compare_smoothing) - set(SCHEMAS["smoothing"])
        _require(not unknown, f"compare_smoothing: unknown choices {sorted(unknown)}")


# A stain metric has no pixel to score without a stain: its whole-frame counterpart stands in.
STAIN_METRIC_FALLBACK = {"psnr_content_stain": "psnr", "psnr_stain": "psnr", "flicker_stain": "flicker"}


def restoration_metric(metric: str, corruption: Any) -> str:
    """The validation metric to monitor and return: ``val/<variant>/<metric>``, checked here so a typo
    fails before training, not after the first epoch. With ``corruption=none`` a stain metric is
    undefined, so its whole-frame counterpart is used (said once in the log)."""
    from vidlab.restoration.metrics import METRICS, VARIANTS

    parts = metric.split("/")
    if len(parts) != 3 or parts[0] != "val" or parts[1] not in VARIANTS or parts[2] not in METRICS:
        raise ConfigError(
            f"optimized_metric: must be val/<{'|'.join(VARIANTS)}>/<{'|'.join(METRICS)}> (got {metric!r})"
        )
    if isinstance(corruption, NoCorruptionConfig) and parts[2] in STAIN_METRIC_FALLBACK:
        fallback = f"val/{parts[1]}/{STAIN_METRIC_FALLBACK[parts[2]]}"
        log.warning("optimized_metric: %s is undefined without a stain (corruption=none); using %s", metric, fallback)
        return fallback
    return metric


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
    "logger": {"mlflow": MlflowLoggerConfig, "none": NoLoggerConfig},
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


def build_node(key: str, schema: type, node: Any) -> Any:
    """Merge ``node`` into ``schema`` and instantiate it; errors become one line naming ``key``."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        where = ".".join(part for part in (key, getattr(err, "full_key", None)) if part)
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None
    except ValueError as err:
        raise ConfigError(f"{key}.{err}" if key else str(err)) from None


def build_smoothing_config(name: str, overrides: Any = None) -> Any:
    """A smoothing choice's typed config, from its defaults (and optional overrides)."""
    return build_node("smoothing", SCHEMAS["smoothing"][name], overrides or {"name": name})


def _trainer_arguments() -> set[str]:
    import inspect

    import lightning

    return set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}


def _resolved(cfg: DictConfig, key: str) -> Any:
    try:
        node = cfg.get(key)
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except OmegaConfBaseException as err:
        where = getattr(err, "full_key", None) or key
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None


def _build_choice(cfg: DictConfig, group: str, choices: dict[str, type]) -> Any:
    node = _resolved(cfg, group)
    if node is None or "name" not in node:
        raise ConfigError(f"{group}: missing (choose one of {', '.join(choices)})")
    if node["name"] not in choices:
        raise ConfigError(f"{group}.name: unknown choice {node['name']!r} here (choose one of {', '.join(choices)})")
    return build_node(group, choices[node["name"]], node)


def validate(cfg: DictConfig) -> RunSpec:
    """Check the whole composed config; raise :class:`ConfigError` on the first bad value."""
    nodes: dict[str, Any] = {group: _build_choice(cfg, group, choices) for group, choices in SCHEMAS.items()}
    for key, schema in FIXED_SCHEMAS.items():
        nodes[key] = build_node(key, schema, _resolved(cfg, key) or {})
    trainer_node = _resolved(cfg, "trainer") or {}
    unknown = sorted(set(trainer_node) - _trainer_arguments())
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]}: not an argument of lightning.Trainer")
    known = {k: trainer_node[k] for k in trainer_node if k in TrainerConfig.__dataclass_fields__}
    nodes["trainer"] = build_node("trainer", TrainerConfig, known)
    top = {k: _resolved(cfg, k) for k in TopLevelConfig.__dataclass_fields__ if k in cfg}
    nodes["top"] = build_node("", TopLevelConfig, top)
    if "optimizer" not in cfg or "_target_" not in cfg.optimizer:
        raise ConfigError("optimizer: needs a _target_ (e.g. optimizer=adamw)")
    nodes["top"] = replace(nodes["top"], optimized_metric=restoration_metric(nodes["top"].optimized_metric, nodes["corruption"]))
    spec = RunSpec(**nodes, optimizer=cfg.optimizer, scheduler=cfg.get("scheduler"))
    if isinstance(spec.dataset, MovingDigitsConfig):
        size = min(spec.dataset.height, spec.dataset.width)
        if 2 * spec.corruption.max_radius >= size:
            raise ConfigError(
                f"corruption: radius {spec.corruption.max_radius} does not fit a "
                f"{spec.dataset.height}x{spec.dataset.width} frame (needs 2*radius < {size})"
            )
    return spec


# ---------------------------------------------------------------- extract.py: clip index
VIDEO_EXTENSIONS = [".mp4", ".avi", ".mkv", ".mov", ".mpg"]


def _check_ratios(ratios: list[float]) -> None:
    _require(
        len(ratios) == 3 and min(ratios) >= 0 and abs(sum(ratios) - 1) < 1e-6,
        f"split_ratios must be three non-negative numbers (train, val, test) summing to 1 (got {ratios})",
    )


@dataclass
class UcfCrimeConfig:
    name: str = "ucf_crime"
    root: str = "???"
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    split_lists: str = "auto"
    split_ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    val_ratio: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.split_lists in ("auto", "official", "none"), f"split_lists must be auto, official or none (got {self.split_lists!r})")
        _check_ratios(self.split_ratios)
        _require(0 <= self.val_ratio < 1, f"val_ratio must be in [0, 1) (got {self.val_ratio})")


@dataclass
class VideoTreeConfig:
    name: str = "video_tree"
    root: str = "???"
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    normal_categories: list[str] = field(default_factory=lambda: ["Normal"])
    split_ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 0

    def __post_init__(self) -> None:
        _check_ratios(self.split_ratios)


@dataclass
class IndexConfig:
    output: str = "???"
    clip_len: int = 32
    stride: int = 16
    short_videos: str = "drop"
    on_error: str = "fail"
    paths: str = "relative"
    frame_count: str = "packets"
    workers: int = 0
    probe_cache: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.clip_len >= 1, f"clip_len must be >= 1 (got {self.clip_len})")
        _require(self.stride >= 1, f"stride must be >= 1 (got {self.stride})")
        _require(self.short_videos in ("drop", "pad"), f"short_videos must be drop or pad (got {self.short_videos!r})")
        _require(self.on_error in ("fail", "skip"), f"on_error must be fail or skip (got {self.on_error!r})")
        _require(self.paths in ("relative", "absolute"), f"paths must be relative or absolute (got {self.paths!r})")
        _require(self.frame_count in ("packets", "decode"), f"frame_count must be packets or decode (got {self.frame_count!r})")
        _require(self.workers >= 0, f"workers must be >= 0 (got {self.workers})")


@dataclass
class IndexCheckConfig:
    allow_padded: Optional[bool] = None
    check_files: bool = True
    allow_outside_root: bool = False


@dataclass
class ExtractorConfig:
    name: str = "swin3d_t"
    weights: Optional[str] = "DEFAULT"
    frames: int = 8

    def __post_init__(self) -> None:
        from vidlab.embeddings.backbones import BACKBONES, check_frames

        _require(self.name in BACKBONES, f"name: unknown backbone {self.name!r} (choose one of {', '.join(BACKBONES)})")
        check_frames(self.name, self.frames)


@dataclass
class ExtractionConfig:
    output: str = "???"
    preprocess: str = "weights"
    notebook_size: int = 224
    batch_size: int = 16
    num_workers: int = 2
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    on_error: str = "fail"
    overwrite: bool = False
    max_artifact_mb: float = 512.0
    seed: int = 0
    colour: str = "exact"

    def __post_init__(self) -> None:
        _require(self.preprocess in ("weights", "notebook"), f"preprocess must be weights or notebook (got {self.preprocess!r})")
        _require(self.notebook_size >= 16, f"notebook_size must be >= 16 (got {self.notebook_size})")
        _require(self.colour in ("exact", "fast"), f"colour must be exact or fast (got {self.colour!r})")
        _require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        _require(self.num_workers >= 0, f"num_workers must be >= 0 (got {self.num_workers})")
        _require(self.precision in ("32", "32-true", "bf16-mixed", "16-mixed"), f"precision must be 32, bf16-mixed or 16-mixed (got {self.precision!r})")
        _require(self.on_error in ("fail", "skip"), f"on_error must be fail or skip (got {self.on_error!r})")
        _require(self.max_artifact_mb >= 0, f"max_artifact_mb must be >= 0 (got {self.max_artifact_mb})")


@dataclass
class ExtractSpec:
    stage: str
    index_file: str
    path_root: Optional[str]
    dataset: UcfCrimeConfig | VideoTreeConfig | None
    indexing: IndexConfig
    check: IndexCheckConfig
    extractor: ExtractorConfig
    extraction: ExtractionConfig
    logger: MlflowLoggerConfig | NoLoggerConfig


EXTRACT_STAGES = ("extract", "index", "validate")
INDEX_DATASETS: dict[str, type] = {"ucf_crime": UcfCrimeConfig, "video_tree": VideoTreeConfig}


def validate_extract(cfg: DictConfig) -> ExtractSpec:
    """Check an ``extract.py`` config; the dataset is only required by the stages that read it."""
    stage = cfg.get("stage")
    if stage not in EXTRACT_STAGES:
        raise ConfigError(f"stage: must be one of {', '.join(EXTRACT_STAGES)} (got {stage!r})")
    dataset = _build_choice(cfg, "dataset", INDEX_DATASETS) if stage == "index" else None
    index_file = _resolved(cfg, "index")
    if not isinstance(index_file, str) or not index_file:
        raise ConfigError(f"index: the path of an index_clips.csv (got {index_file!r})")
    return ExtractSpec(
        stage=stage,
        index_file=index_file,
        path_root=_resolved(cfg, "path_root"),
        dataset=dataset,
        indexing=build_node("indexing", IndexConfig, _resolved(cfg, "indexing")),
        check=build_node("check", IndexCheckConfig, _resolved(cfg, "check")),
        extractor=build_node("extractor", ExtractorConfig, _resolved(cfg, "extractor")),
        extraction=build_node("extraction", ExtractionConfig, _resolved(cfg, "extraction")),
        logger=_build_choice(cfg, "logger", SCHEMAS["logger"]),
    )


# ---------------------------------------------------------------- train.py experiment=probe
@dataclass
class ProbeModelConfig:
    name: str = "linear_probe"
    hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _require(self.hidden >= 1, f"hidden must be >= 1 (got {self.hidden})")
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")


@dataclass
class ProbeConfig:
    batch_size: int = 256
    num_workers: int = 0
    class_weight: str = "auto"
    annotations: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        _require(self.class_weight in ("auto", "none"), f"class_weight must be auto or none (got {self.class_weight!r})")


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
    embeddings = _resolved(cfg, "embeddings")
    if not isinstance(embeddings, str) or not embeddings:
        raise ConfigError(f"embeddings: an extraction output folder or its MLflow run id (got {embeddings!r})")
    model = _build_choice(cfg, "model", {"linear_probe": ProbeModelConfig, "mlp_probe": ProbeModelConfig})
    trainer_node = _resolved(cfg, "trainer") or {}
    known = {k: trainer_node[k] for k in trainer_node if k in TrainerConfig.__dataclass_fields__}
    seed = _resolved(cfg, "seed")
    if not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer (got {seed!r})")
    return ProbeSpec(
        embeddings=embeddings, model=model, probe=build_node("probe", ProbeConfig, _resolved(cfg, "probe") or {}),
        trainer=build_node("trainer", TrainerConfig, known), logger=_build_choice(cfg, "logger", SCHEMAS["logger"]),
        seed=seed, optimized_metric=str(_resolved(cfg, "optimized_metric")), optimizer=cfg.optimizer,
    )
