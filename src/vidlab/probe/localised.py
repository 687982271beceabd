"""Clip embeddings with localised anomalies, written as a vidlab extraction (no video, no backbone).

Why: the probe benchmark and tests need anomalous videos whose anomaly covers only a minority of
their clips, with UCF-Crime's temporal annotation file to score frames; real UCF-Crime cannot be
downloaded here. Every clip inherits its video's label, as the real extraction does, so a clip
classifier trained on those labels can learn a scene cue (anomalous videos come from somewhat
different cameras) instead of the anomaly itself; frame-level ROC-AUC tells the two apart.

Per video: ``scene = scene_std * N(0, I) + y * scene_shift * d_scene``; per clip ``j``:
``x_j = scene + e_j + strength * d_cat[k]`` when clip ``j`` is anomalous, ``e`` AR(1) in time with
unit marginal variance; ``d_scene`` and ``d_cat`` are orthonormal random directions. The defaults
(``scene_shift`` 2, ``strength`` 5, ``scene_std`` 1) make it learnable from 60 videos per class but
not trivial: on the test split a nearest-centroid score reaches a frame-level ROC-AUC of about 0.7-0.8
(seeds 0-2), the true anomaly directions about 0.99.

    python -m vidlab.probe.localised OUT [--videos-per-class 60] [--dim 128] [--seed 0]

``train.py task=probe embeddings=OUT probe.annotations=OUT/Temporal_Anomaly_Annotation_for_Testing_Videos.txt``
then reads it like any extraction folder.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vidlab.embeddings.clip_index import COLUMNS, file_sha256, write_csv_atomic
from vidlab.embeddings.manifest import KINDS, IndexRef, Manifest, SplitInfo
from vidlab.files import atomic_path, write_text
from vidlab.splits import SPLITS

ANNOTATIONS = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
INDEX = "index_clips.csv"
CLIP_LEN = 16
FPS = 30.0
DEFAULT_VIDEOS = {"train": 60, "val": 20, "test": 30}


def _anomalous_ranges(rng: np.random.Generator, n: int, fraction: tuple[float, float],
                      p_two_ranges: float) -> list[tuple[int, int]]:
    """1 (or, with probability ``p_two_ranges``, 2 separated) ranges of clips ``[start, end)`` covering
    a share uniform in ``fraction`` of the ``n`` clips, clamped so that the share stays in it, >= 1 clip."""
    low = max(1, math.ceil(round(fraction[0] * n, 9)))
    high = max(low, math.floor(round(fraction[1] * n, 9)))
    total = min(max(round(rng.uniform(*fraction) * n), low), high)
    if rng.random() < p_two_ranges and total >= 2 and n - total >= 1:
        first = int(rng.integers(1, total))
        # normal clips: a, then 1 + b - a between, then the rest
        a, b = sorted(int(v) for v in rng.integers(0, n - total, size=2))
        return [(a, a + first), (b + first + 1, b + total + 1)]
    start = int(rng.integers(0, n - total + 1))
    return [(start, start + total)]


def _ar1_noise(rng: np.random.Generator, n: int, dim: int, rho: float) -> np.ndarray:
    """``e_0 ~ N(0, I)``, ``e_j = rho e_{j-1} + sqrt(1 - rho^2) z_j``: unit variance, correlated in time."""
    z = rng.standard_normal((n, dim))
    noise = np.empty_like(z)
    noise[0] = z[0]
    for j in range(1, n):
        noise[j] = rho * noise[j - 1] + math.sqrt(1 - rho**2) * z[j]
    return noise


def _write_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` so that a reader never sees half a file."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)


@dataclass(frozen=True)
class _Settings:
    """:func:`write_localised`'s arguments, checked: what each video's draws read, and what the manifest records."""

    seed: int
    videos: dict[str, int]
    dim: int
    categories: tuple[str, ...]
    scene_std: float
    scene_shift: float
    strength: float
    rho: float
    min_clips: int
    max_clips: int
    anomaly_fraction: tuple[float, float]
    p_two_ranges: float

    def __post_init__(self) -> None:
        """Refuse settings the generator cannot honour, before anything is written."""
        if (not 1 <= self.min_clips <= self.max_clips or self.dim < len(self.categories) + 1
                or not 0 < self.anomaly_fraction[0] <= self.anomaly_fraction[1] < 1):
            raise ValueError("synthetic embeddings: need 1 <= min_clips <= max_clips, dim > number of categories, "
                             "0 < anomaly_fraction[0] <= anomaly_fraction[1] < 1 "
                             f"(got {self.min_clips}, {self.max_clips}, {self.dim}, {self.anomaly_fraction})")

    def generator(self) -> dict[str, Any]:
        """The manifest's ``generator``: how to make the same folder again."""
        return {"seed": self.seed, "videos": self.videos, "dim": self.dim, "categories": list(self.categories),
                "scene_std": self.scene_std, "scene_shift": self.scene_shift, "strength": self.strength,
                "rho": self.rho, "min_clips": self.min_clips, "max_clips": self.max_clips,
                "anomaly_fraction": list(self.anomaly_fraction), "p_two_ranges": self.p_two_ranges,
                "clip_len": CLIP_LEN, "fps": FPS}


def _checked_videos(folder: Path, videos: dict[str, int] | None) -> dict[str, int]:
    """Videos per class in each split (the defaults for None); a folder that is not new or empty, then a
    split without videos, refused before anything is written."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"synthetic embeddings: {folder} is not an empty folder; choose a new one")
    videos = dict(DEFAULT_VIDEOS if videos is None else videos)
    if set(videos) != set(SPLITS) or min(videos.values()) < 1:
        raise ValueError(f"synthetic embeddings: videos must give each of {SPLITS} at least 1 video per class "
                         f"(got {videos})")
    return videos


def _video_path(split: str, series: str, number: int, y: int) -> str:
    """The video's path as UCF-Crime names it: anomalous ones by category, normal ones by split."""
    if y:
        return f"Anomaly-Videos/{series}/{series}{number:03d}_x264.mp4"
    if split == "test":
        return f"Testing_Normal_Videos_Anomaly/Normal_Videos_{number:03d}_x264.mp4"
    return f"Training-Normal-Videos/Normal_Videos{number:03d}_x264.mp4"


def _video(rng: np.random.Generator, s: _Settings, directions: np.ndarray, y: int,
           k: int) -> tuple[np.ndarray, list[tuple[int, int]], int]:
    """One video's clip embeddings, its anomalous clip ranges (none if normal) and its frame count."""
    d_scene, d_cat = directions[0], directions[1:]
    n = int(rng.integers(s.min_clips, s.max_clips + 1))
    n_frames = CLIP_LEN * n + int(rng.integers(0, CLIP_LEN))
    x = s.scene_std * rng.standard_normal(s.dim) + y * s.scene_shift * d_scene + _ar1_noise(rng, n, s.dim, s.rho)
    ranges = _anomalous_ranges(rng, n, s.anomaly_fraction, s.p_two_ranges) if y else []
    for start, end in ranges:
        x[start:end] += s.strength * d_cat[k]
    return x, ranges, n_frames


def _annotation(path: str, category: str, ranges: list[tuple[int, int]]) -> str:
    """The video's line in UCF-Crime's temporal annotation file: up to 2 frame ranges, -1 where none."""
    bounds = [v for s, e in ranges for v in (CLIP_LEN * s, CLIP_LEN * e - 1)]
    bounds += [-1] * (4 - len(bounds))
    return "  ".join([Path(path).name, category, *map(str, bounds)])


def _split_videos(rng: np.random.Generator, s: _Settings, directions: np.ndarray, split: str,
                  numbers: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[list], list[str]]:
    """One split's videos, normal and anomalous in turn (categories in turn): clip embeddings, labels, index
    rows and (test only) annotation lines; ``numbers`` counts each series' file numbers across splits."""
    embeddings, labels, rows, annotations = [], [], [], []
    for i in range(2 * s.videos[split]):
        y, k = i % 2, (i // 2) % len(s.categories)
        series = s.categories[k] if y else ("Testing" if split == "test" else "Training")
        numbers[series] += 1
        path = _video_path(split, series, numbers[series], y)
        x, ranges, n_frames = _video(rng, s, directions, y, k)
        embeddings.append(x)
        labels.append(np.full(len(x), y, np.int8))
        category = s.categories[k] if y else "Normal"
        rows += [[split, y, category, path, j, CLIP_LEN * j, CLIP_LEN * (j + 1), CLIP_LEN, CLIP_LEN, FPS, n_frames]
                 for j in range(len(x))]
        if split == "test":
            annotations.append(_annotation(path, category, ranges))
    return np.concatenate(embeddings).astype(np.float16), np.concatenate(labels), rows, annotations


def _write_split(folder: Path, split: str, x: np.ndarray, labels: np.ndarray) -> SplitInfo:
    """The split's embeddings, labels and valid flags (all valid) as ``.npy`` files; its manifest entry."""
    files = {kind: f"{kind}_{split}.npy" for kind in KINDS}
    for kind, array in zip(KINDS, (x, labels, np.ones(len(x), bool))):
        _write_npy(folder / files[kind], array)
    return SplitInfo(len(x), files,
                     label_counts={str(v): int(c) for v, c in zip(*np.unique(labels, return_counts=True))})


def _write_index(folder: Path, rows: list[list], annotations: list[str], splits: dict[str, SplitInfo],
                 s: _Settings) -> None:
    """The clip index, the test split's temporal annotations and, last, the manifest that points at them."""
    index = folder.resolve() / INDEX
    write_csv_atomic(pd.DataFrame(rows, columns=COLUMNS), index)
    write_text(folder / ANNOTATIONS, "\n".join(annotations) + "\n")
    Manifest(backbone="synthetic/localised", weights=None, embedding_dim=s.dim, dtype="float16",
             frames_per_clip=CLIP_LEN, index=IndexRef(str(index), file_sha256(index), len(rows)),
             splits=splits, mlflow_run_id=None, generator=s.generator()).write(folder)


def write_localised(
    folder: Path,
    *,
    videos: dict[str, int] | None = None,
    dim: int = 128,
    seed: int = 0,
    categories: tuple[str, ...] = ("Fighting", "Explosion", "Robbery"),
    scene_std: float = 1.0,
    scene_shift: float = 2.0,
    strength: float = 5.0,
    rho: float = 0.5,
    min_clips: int = 20,
    max_clips: int = 60,
    anomaly_fraction: tuple[float, float] = (0.1, 0.3),
    p_two_ranges: float = 0.3,
) -> Path:
    """Write an extraction folder (embeddings, labels, valid, index, manifest) and the test split's
    temporal annotations into ``folder`` (new or empty); returns it. ``videos``: videos per class in
    each split; ``anomaly_fraction``: the range of the share of an anomalous video's clips that are
    anomalous; ``p_two_ranges``: the probability that they form 2 ranges rather than 1."""
    folder = Path(folder)
    s = _Settings(seed, _checked_videos(folder, videos), dim, categories, scene_std, scene_shift, strength, rho,
                  min_clips, max_clips, anomaly_fraction, p_two_ranges)
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((dim, len(categories) + 1)))[0].T  # orthonormal rows
    folder.mkdir(parents=True, exist_ok=True)
    numbers = dict.fromkeys(("Training", "Testing", *categories), 0)  # file numbers, unique across splits
    rows, annotations, splits = [], [], {}
    for split in SPLITS:
        x, labels, split_rows, split_annotations = _split_videos(rng, s, directions, split, numbers)
        rows += split_rows
        annotations += split_annotations
        splits[split] = _write_split(folder, split, x, labels)
    _write_index(folder, rows, annotations, splits, s)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vidlab.probe.localised", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="a new or empty folder")
    parser.add_argument("--videos-per-class", type=int, default=DEFAULT_VIDEOS["train"],
                        help="train videos per class; val and test get 1/3 and 1/2 of it")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.videos_per_class
    try:
        folder = write_localised(Path(args.out),
                                 videos={"train": n, "val": max(1, round(n / 3)), "test": max(1, round(n / 2))},
                                 dim=args.dim, seed=args.seed)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    splits = Manifest.read(folder).splits
    print(f"wrote {folder}: " + ", ".join(f"{split} {info.rows} clips" for split, info in splits.items()))


if __name__ == "__main__":
    main()
