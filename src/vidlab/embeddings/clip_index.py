"""``index_clips.csv``: one row per clip of every video of a collection, in the notebook's format.

Columns, in order: ``split,y,category,path,clip_idx,start_frame,end_frame,clip_len,stride,fps,n_frames``;
``end_frame`` is exclusive; clips start at 0, stride, 2*stride, ... while they fit. A sidecar JSON
(``<name>.json``) records the root that relative paths are relative to, the settings and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from vidlab.embeddings.config import IndexConfig
from vidlab.embeddings.layouts import Video
from vidlab.errors import InputError
from vidlab.files import atomic_path, write_text
from vidlab.splits import SPLITS
from vidlab.video.count import FrameCountCache, VideoInfo, count_many

COLUMNS = ["split", "y", "category", "path", "clip_idx", "start_frame", "end_frame", "clip_len", "stride", "fps",
           "n_frames"]


class BadVideosError(InputError):
    """Raised by ``on_error=fail``: the message lists every bad file."""


def clip_starts(n_frames: int, clip_len: int, stride: int, short_videos: str) -> list[int]:
    if n_frames < clip_len:
        return [0] if short_videos == "pad" else []
    return list(range(0, n_frames - clip_len + 1, stride))


def index_rows(videos: list[Video], infos: dict[str, VideoInfo], root: Path,
               s: IndexConfig) -> tuple[list[dict], list[str]]:
    rows, short = [], []
    order = {split: i for i, split in enumerate(SPLITS)}
    for video in sorted(videos, key=lambda v: (order[v.split], str(v.path))):
        info = infos.get(str(video.path))
        if info is None:
            continue
        starts = clip_starts(info.n_frames, s.clip_len, s.stride, s.short_videos)
        if info.n_frames < s.clip_len:
            short.append(str(video.path))
        path = os.path.relpath(video.path, root) if s.paths == "relative" else str(video.path.resolve())
        for clip_idx, start in enumerate(starts):
            rows.append({
                "split": video.split, "y": video.y, "category": video.category, "path": path,
                "clip_idx": clip_idx, "start_frame": start, "end_frame": start + s.clip_len,
                "clip_len": s.clip_len, "stride": s.stride, "fps": round(info.fps, 6), "n_frames": info.n_frames,
            })
    return rows, short


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def build_index(videos: list[Video], root: Path, s: IndexConfig, layout_report: dict,
                layout: dict) -> tuple[pd.DataFrame, dict]:
    """Probe, cut and write the index (``s.output``) and its sidecar; returns the table and the report,
    whose settings are the indexing ones and the ``layout``'s that decide the rows (name, seed)."""
    output = Path(s.output)
    started = time.perf_counter()
    cache = FrameCountCache(s.count_cache)
    cached_before = sum(cache.get(v.path, s.frame_count) is not None for v in videos)
    results = count_many([str(v.path) for v in videos], s.frame_count, s.workers, cache)
    count_seconds = time.perf_counter() - started
    bad = {path: r for path, r in results.items() if isinstance(r, str)}
    if bad and s.on_error == "fail":
        lines = "\n".join(f"  {path}: {msg}" for path, msg in sorted(bad.items()))
        raise BadVideosError(f"{len(bad)} bad video(s) (set indexing.on_error=skip to leave them out):\n{lines}")
    infos = {p: r for p, r in results.items() if isinstance(r, VideoInfo)}
    rows, short = index_rows(videos, infos, root, s)
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv_atomic(table, output)
    hours = sum(p.n_frames / p.fps for p in infos.values() if p.fps > 0) / 3600
    report = {
        "root": str(root.resolve()),
        "paths": s.paths,
        "settings": {k: v for k, v in asdict(s).items() if k != "output"} | layout,
        "videos_found": len(videos),
        "videos_indexed": int(table["path"].nunique()) if len(table) else 0,
        "clips": len(table),
        "clips_per_split": {k: int(v) for k, v in table["split"].value_counts().items()},
        "clips_per_class": {str(k): int(v) for k, v in table["y"].value_counts().items()},
        "videos_per_split": {k: int(v) for k, v in table.groupby("split")["path"].nunique().items()},
        "short_videos": {"policy": s.short_videos, "count": len(short), "paths": short},
        "bad_videos": bad,
        "frame_count": {"seconds": round(count_seconds, 3), "cached_videos": cached_before,
                        "hours_of_video": round(hours, 4),
                        "seconds_per_hour_of_video": round(count_seconds / hours, 3) if hours else None},
        **layout_report,
    }
    write_text(output.with_suffix(".json"), json.dumps(report, indent=2))
    return table, report
