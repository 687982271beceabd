"""The clip-embedding task's schemas (``extract.py``): indexing, index checks and the extraction
settings; the layouts' and backbones' schemas are registered beside their code (:data:`LAYOUTS` in
:mod:`vidlab.embeddings.layouts`, :data:`BACKBONES` in :mod:`vidlab.embeddings.backbones`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig

from vidlab.embeddings.backbones import BACKBONES, BackboneConfig
from vidlab.embeddings.layouts import LAYOUTS
from vidlab.errors import ConfigError
from vidlab.schema import (
    LOGGERS,
    MlflowLoggerConfig,
    NoLoggerConfig,
    at_least,
    build_choice,
    build_node,
    one_of,
    refuse_unknown_keys,
    resolved,
    seeds,
)


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
    layout: Any  # the chosen layout's config (LAYOUTS: name, root, seed, ...); None but for stage=index
    indexing: IndexConfig
    check: IndexCheckConfig
    backbone: BackboneConfig
    extraction: ExtractionConfig
    logger: MlflowLoggerConfig | NoLoggerConfig


EXTRACT_STAGES = ("extract", "index", "validate")
# conf/extract.yaml's
EXTRACT_KEYS = ("stage", "index", "path_root", "layout", "indexing", "check", "backbone", "extraction", "logger")


def validate_extract(cfg: DictConfig) -> ExtractSpec:
    """Check an ``extract.py`` config; the layout is only required by the stage that reads it."""
    refuse_unknown_keys(cfg, EXTRACT_KEYS)
    stage = cfg.get("stage")
    if stage not in EXTRACT_STAGES:
        raise ConfigError(f"stage: must be one of {', '.join(EXTRACT_STAGES)} (got {stage!r})")
    layout = build_choice(cfg, LAYOUTS) if stage == "index" else None
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
        backbone=build_choice(cfg, BACKBONES),
        extraction=build_node("extraction", ExtractionConfig, resolved(cfg, "extraction")),
        logger=build_choice(cfg, LOGGERS),
    )


