"""The clip-embedding task's schemas (``extract.py``): the index layouts, indexing, index checks,
the backbone and the extraction settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.schema import LOGGERS, MlflowLoggerConfig, NoLoggerConfig, build_choice, build_node, require, resolved

VIDEO_EXTENSIONS = [".mp4", ".avi", ".mkv", ".mov", ".mpg"]


def _check_ratios(ratios: list[float]) -> None:
    require(
        len(ratios) == 3 and min(ratios) >= 0 and abs(sum(ratios) - 1) < 1e-6,
        f"split_ratios must be three non-negative numbers (train, val, test) summing to 1 (got {ratios})",
    )


@dataclass
class UcfCrimeConfig:
    name: str
    root: str
    extensions: list[str]
    split_lists: str
    split_ratios: list[float]
    val_ratio: float
    seed: int

    def __post_init__(self) -> None:
        require(self.split_lists in ("auto", "official", "none"), f"split_lists must be auto, official or none (got {self.split_lists!r})")
        _check_ratios(self.split_ratios)
        require(0 <= self.val_ratio < 1, f"val_ratio must be in [0, 1) (got {self.val_ratio})")


@dataclass
class VideoTreeConfig:
    name: str
    root: str
    extensions: list[str]
    normal_categories: list[str]
    split_ratios: list[float]
    seed: int

    def __post_init__(self) -> None:
        _check_ratios(self.split_ratios)


@dataclass
class IndexConfig:
    output: str
    clip_len: int
    stride: int
    short_videos: str
    on_error: str
    paths: str
    frame_count: str
    workers: int
    count_cache: Optional[str]

    def __post_init__(self) -> None:
        require(self.clip_len >= 1, f"clip_len must be >= 1 (got {self.clip_len})")
        require(self.stride >= 1, f"stride must be >= 1 (got {self.stride})")
        require(self.short_videos in ("drop", "pad"), f"short_videos must be drop or pad (got {self.short_videos!r})")
        require(self.on_error in ("fail", "skip"), f"on_error must be fail or skip (got {self.on_error!r})")
        require(self.paths in ("relative", "absolute"), f"paths must be relative or absolute (got {self.paths!r})")
        require(self.frame_count in ("packets", "decode"), f"frame_count must be packets or decode (got {self.frame_count!r})")
        require(self.workers >= 0, f"workers must be >= 0 (got {self.workers})")


@dataclass
class IndexCheckConfig:
    allow_padded: Optional[bool]
    check_files: bool
    allow_outside_root: bool


@dataclass
class BackboneConfig:
    name: str
    weights: Optional[str]
    frames_per_clip: int

    def __post_init__(self) -> None:
        from vidlab.embeddings.backbones import BACKBONES, check_frames

        require(self.name in BACKBONES, f"name: unknown backbone {self.name!r} (choose one of {', '.join(BACKBONES)})")
        check_frames(self.name, self.frames_per_clip)


@dataclass
class ExtractionConfig:
    output: str
    preprocess: str
    notebook_size: int
    batch_size: int
    num_workers: int
    accelerator: str
    devices: Any
    strategy: str
    precision: str
    channels_last: bool
    compile: bool
    on_error: str
    overwrite: bool
    max_artifact_mb: float
    seed: int
    colour: str

    def __post_init__(self) -> None:
        require(self.preprocess in ("weights", "notebook"), f"preprocess must be weights or notebook (got {self.preprocess!r})")
        require(self.notebook_size >= 16, f"notebook_size must be >= 16 (got {self.notebook_size})")
        require(self.colour in ("exact", "fast"), f"colour must be exact or fast (got {self.colour!r})")
        require(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        require(self.num_workers >= 0, f"num_workers must be >= 0 (got {self.num_workers})")
        require(self.precision in ("32", "32-true", "bf16-mixed", "16-mixed"), f"precision must be 32, bf16-mixed or 16-mixed (got {self.precision!r})")
        require(self.on_error in ("fail", "skip"), f"on_error must be fail or skip (got {self.on_error!r})")
        require(self.max_artifact_mb >= 0, f"max_artifact_mb must be >= 0 (got {self.max_artifact_mb})")


@dataclass
class ExtractSpec:
    stage: str
    index_file: str
    path_root: Optional[str]
    layout: UcfCrimeConfig | VideoTreeConfig | None
    indexing: IndexConfig
    check: IndexCheckConfig
    backbone: BackboneConfig
    extraction: ExtractionConfig
    logger: MlflowLoggerConfig | NoLoggerConfig


EXTRACT_STAGES = ("extract", "index", "validate")
LAYOUTS: dict[str, type] = {"ucf_crime": UcfCrimeConfig, "video_tree": VideoTreeConfig}


def validate_extract(cfg: DictConfig) -> ExtractSpec:
    """Check an ``extract.py`` config; the layout is only required by the stage that reads it."""
    stage = cfg.get("stage")
    if stage not in EXTRACT_STAGES:
        raise ConfigError(f"stage: must be one of {', '.join(EXTRACT_STAGES)} (got {stage!r})")
    layout = build_choice(cfg, "layout", LAYOUTS) if stage == "index" else None
    index_file = resolved(cfg, "index")
    if not isinstance(index_file, str) or not index_file:
        raise ConfigError(f"index: the path of an index_clips.csv (got {index_file!r})")
    return ExtractSpec(
        stage=stage,
        index_file=index_file,
        path_root=resolved(cfg, "path_root"),
        layout=layout,
        indexing=build_node("indexing", IndexConfig, resolved(cfg, "indexing")),
        check=build_node("check", IndexCheckConfig, resolved(cfg, "check")),
        backbone=build_node("backbone", BackboneConfig, resolved(cfg, "backbone")),
        extraction=build_node("extraction", ExtractionConfig, resolved(cfg, "extraction")),
        logger=build_choice(cfg, "logger", LOGGERS),
    )


