"""``extract.py stage=index``: find the videos of a collection (its layout), cut them into indexed
clips (``index_clips.csv`` and its sidecar JSON), then check the index as ``stage=validate`` does."""

from __future__ import annotations

from pathlib import Path

from vidlab import tracking
from vidlab.embeddings.clip_index import build_index, file_sha256
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.index_check import read_index, resolve_paths
from vidlab.embeddings.layouts import LAYOUTS, Video
from vidlab.embeddings.stage_run import StageRun
from vidlab.embeddings.stage_validate import check_and_report
from vidlab.errors import ConfigError
from vidlab.tracking.inputs import log_inputs, video_split_inputs

Found = tuple[list[Video], dict]  # the collection's videos with their splits, and how they were split


def prepare(spec: ExtractSpec) -> Found:
    """The collection's videos and splits: a root that is not a folder or holds none is refused
    before the run exists."""
    layout = spec.layout
    root = Path(layout.root)
    if not root.is_dir():
        raise ConfigError(f"layout.root: not a folder: {root}")
    videos, layout_report = LAYOUTS.build(layout)
    if not videos:
        raise ConfigError(f"layout.root: no video of the {layout.name} layout under {root}")
    return videos, layout_report


def run(stage: StageRun, found: Found) -> None:
    spec = stage.spec
    index_file, report = make_index(spec, *found)
    # read and hashed once, for the datasets and the check
    table, sha256 = read_index(index_file), file_sha256(index_file)
    if stage.client is not None and report["clips"]:
        with tracking.best_effort("datasets", stage.client, stage.run_id):
            paths = resolve_paths(table["path"], index_file, None)
            videos = {str(split): list(split_paths) for split, split_paths in paths.groupby(table["split"], sort=False)}
            log_inputs(stage.client, stage.run_id,
                       video_split_inputs(spec.layout.name, videos, {"layout": spec.layout.name}))
    stage.files += [("index", index_file), ("index", index_file.with_suffix(".json"))]
    stage.metrics.update({"videos_indexed": report["videos_indexed"], "clips": report["clips"],
                          "bad_videos": len(report["bad_videos"]), "short_videos": report["short_videos"]["count"],
                          "frame_count_seconds": report["frame_count"]["seconds"]})
    check_and_report(stage, index_file, table, sha256)


def make_index(spec: ExtractSpec, videos: list[Video], layout_report: dict) -> tuple[Path, dict]:
    layout, s = spec.layout, spec.indexing
    output = Path(s.output)
    _, report = build_index(videos, Path(layout.root), s, layout_report, {"layout": layout.name, "seed": layout.seed})
    print(f"wrote {output}: {report['clips']} clips of {report['videos_indexed']} videos "
          f"(counting frames {report['frame_count']['seconds']} s, {report['frame_count']['cached_videos']} cached)")
    return output, report
