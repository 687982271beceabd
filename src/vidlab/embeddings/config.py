"""The clip-embedding task's schemas (``extract.py``): the index layouts, indexing, index checks,
the backbone and the extraction settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.schema import LOGGERS, MlflowLoggerConfig, NoLoggerConfig, at_least, build_choice, build_node, one_of, require, resolved, seeds

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
        one_of(self, "split_lists", "auto", "official", "none")
        _check_ratios(self.split_ratios)
        require(0 <= self.val_ratio < 1, f"val_ratio must be in [0, 1) (got {self.val_ratio})")
        seeds(self, "seed")


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
        seeds(self, "seed")


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
        at_least(1, self, "clip_len", "stride")
        one_of(self, "short_videos", "drop", "pad")
        one_of(self, "on_error", "fail", "skip")
        one_of(self, "paths", "relative", "absolute")
        one_of(self, "frame_count", "packets", "decode")
        at_least(0, self, "workers")


@dataclass
class IndexCheckConfig:
    allow_padded: Optional[bool]
    check_files: bool
    strict_root: bool


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
    num_workers: int | None
    resize_on: str
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
        one_of(self, "preprocess", "weights", "notebook")
        at_least(16, self, "notebook_size")
        one_of(self, "colour", "exact", "fast")
        at_least(1, self, "batch_size")
        if self.num_workers is not None:
            at_least(0, self, "num_workers")
        one_of(self, "resize_on", "auto", "device", "workers")
        one_of(self, "precision", "32", "32-true", "bf16-mixed", "16-mixed")
        one_of(self, "on_error", "fail", "skip")
        at_least(0, self, "max_artifact_mb")
        seeds(self, "seed")


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


