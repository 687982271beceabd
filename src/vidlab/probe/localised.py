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
from pathlib import Path

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
    with atomic_path(path) as tmp:
        np.save(tmp, array)


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
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"synthetic embeddings: {folder} is not an empty folder; choose a new one")
    videos = dict(DEFAULT_VIDEOS if videos is None else videos)
    if set(videos) != set(SPLITS) or min(videos.values()) < 1:
        raise ValueError(f"synthetic embeddings: videos must give each of {SPLITS} at least 1 video per class "
                         f"(got {videos})")
    if (not 1 <= min_clips <= max_clips or dim < len(categories) + 1
            or not 0 < anomaly_fraction[0] <= anomaly_fraction[1] < 1):
        raise ValueError("synthetic embeddings: need 1 <= min_clips <= max_clips, dim > number of categories, "
                         "0 < anomaly_fraction[0] <= anomaly_fraction[1] < 1 "
                         f"(got {min_clips}, {max_clips}, {dim}, {anomaly_fraction})")
    generator = {"seed": seed, "videos": videos, "dim": dim, "categories": list(categories), "scene_std": scene_std,
                 "scene_shift": scene_shift, "strength": strength, "rho": rho, "min_clips": min_clips,
                 "max_clips": max_clips, "anomaly_fraction": list(anomaly_fraction), "p_two_ranges": p_two_ranges,
                 "clip_len": CLIP_LEN, "fps": FPS}
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((dim, len(categories) + 1)))[0].T  # orthonormal rows
    d_scene, d_cat = directions[0], directions[1:]
    folder.mkdir(parents=True, exist_ok=True)
    numbers = dict.fromkeys(("Training", "Testing", *categories), 0)  # file numbers, unique across splits
    rows, annotations, splits = [], [], {}
    for split in SPLITS:
        embeddings, labels = [], []
        for i in range(2 * videos[split]):
            y, k = i % 2, (i // 2) % len(categories)
            series = categories[k] if y else ("Testing" if split == "test" else "Training")
            numbers[series] += 1
            if y:
                path = f"Anomaly-Videos/{series}/{series}{numbers[series]:03d}_x264.mp4"
            elif split == "test":
                path = f"Testing_Normal_Videos_Anomaly/Normal_Videos_{numbers[series]:03d}_x264.mp4"
            else:
                path = f"Training-Normal-Videos/Normal_Videos{numbers[series]:03d}_x264.mp4"
            n = int(rng.integers(min_clips, max_clips + 1))
            n_frames = CLIP_LEN * n + int(rng.integers(0, CLIP_LEN))
            x = scene_std * rng.standard_normal(dim) + y * scene_shift * d_scene + _ar1_noise(rng, n, dim, rho)
            ranges = _anomalous_ranges(rng, n, anomaly_fraction, p_two_ranges) if y else []
            for start, end in ranges:
                x[start:end] += strength * d_cat[k]
            embeddings.append(x)
            labels.append(np.full(n, y, np.int8))
            category = categories[k] if y else "Normal"
            rows += [[split, y, category, path, j, CLIP_LEN * j, CLIP_LEN * (j + 1), CLIP_LEN, CLIP_LEN, FPS, n_frames]
                     for j in range(n)]
            if split == "test":
                bounds = [v for s, e in ranges for v in (CLIP_LEN * s, CLIP_LEN * e - 1)]
                bounds += [-1] * (4 - len(bounds))
                annotations.append("  ".join([Path(path).name, category, *map(str, bounds)]))
        x, labels = np.concatenate(embeddings).astype(np.float16), np.concatenate(labels)
        files = {kind: f"{kind}_{split}.npy" for kind in KINDS}
        for kind, array in zip(KINDS, (x, labels, np.ones(len(x), bool))):
            _write_npy(folder / files[kind], array)
        splits[split] = SplitInfo(len(x), files,
                                  label_counts={str(v): int(c) for v, c in zip(*np.unique(labels, return_counts=True))})
    index = folder.resolve() / INDEX
    write_csv_atomic(pd.DataFrame(rows, columns=COLUMNS), index)
    write_text(folder / ANNOTATIONS, "\n".join(annotations) + "\n")
    Manifest(backbone="synthetic/localised", weights=None, embedding_dim=dim, dtype="float16", frames_per_clip=CLIP_LEN,
             index=IndexRef(str(index), file_sha256(index), len(rows)),
             splits=splits, mlflow_run_id=None, generator=generator).write(folder)
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
