"""Find the videos of a collection, their category and label, and assign whole videos to splits.

``ucf_crime`` knows the public UCF-Crime tree and its official split lists; ``video_tree`` takes any
``<root>/<category>/**/<video>`` tree with a list of normal categories.

A layout is a function registered in :data:`LAYOUTS` with the schema of its ``conf/layout/<name>.yaml``
(fields ``name``, ``root`` and ``seed`` at least, the others its arguments); ``LAYOUTS.build(config)``
calls it and returns the videos with their splits and a report of how they were split.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidlab.registry import Registry
from vidlab.schema import one_of, require, seeds

NORMAL = "Normal"

LAYOUTS = Registry("layout")
"""The layouts ``layout=<name>`` chooses (``extract.py stage=index``)."""


@dataclass(frozen=True)
class Video:
    path: Path
    category: str
    y: int
    split: str = ""


def find_videos(root: Path, extensions: list[str]) -> list[Path]:
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def stratified_split(videos: list[Video], ratios: list[float], seed: int) -> list[Video]:
    """Per category, a seeded permutation cut by ``ratios`` (train, val, test); by video, never by clip."""
    out = []
    for category in sorted({v.category for v in videos}):
        members = sorted((v for v in videos if v.category == category), key=lambda v: str(v.path))
        rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
        order = rng.permutation(len(members))
        n_test = int(round(ratios[2] * len(members)))
        n_val = int(round(ratios[1] * len(members)))
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out.append(Video(members[i].path, category, members[i].y, split))
    return out


def carve_val(videos: list[Video], val_ratio: float, seed: int) -> list[Video]:
    """Move a stratified ``val_ratio`` of the train videos to val (official lists give train/test only)."""
    train = [v for v in videos if v.split == "train"]
    rest = [v for v in videos if v.split != "train"]
    return rest + stratified_split(train, [1 - val_ratio, val_ratio, 0.0], seed)


def _check_ratios(ratios: list[float]) -> None:
    require(
        len(ratios) == 3 and min(ratios) >= 0 and abs(sum(ratios) - 1) < 1e-6,
        f"split_ratios must be three non-negative numbers (train, val, test) summing to 1 (got {ratios})",
    )


def _folder_kind(name: str) -> str | None:
    key = re.sub(r"[-_ ]", "", name.lower())
    if key.startswith("anomalyvideos"):
        return "anomaly"
    if key.startswith("trainingnormalvideos"):
        return "train_normal"
    if key.startswith("testingnormalvideos"):
        return "test_normal"
    return None


def _read_list(path: Path) -> set[str]:
    return {Path(line.strip()).name for line in path.read_text().splitlines() if line.strip()}


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


@LAYOUTS.register("ucf_crime", UcfCrimeConfig)
def ucf_crime(root: str | Path, extensions: list[str], split_lists: str, split_ratios: list[float], val_ratio: float,
              seed: int) -> tuple[list[Video], dict]:
    """The public UCF-Crime tree, split by its official lists when present. ``Anomaly-Videos*/<Category>/``
    (y=1), ``Training-Normal-Videos*`` and ``Testing_Normal_Videos*`` (category Normal, y=0); official
    ``Anomaly_Train.txt`` / ``Anomaly_Test.txt`` when present (matched by file name), val carved from train."""
    root, videos, folders = Path(root), [], {}
    for path in find_videos(root, extensions):
        parts = path.relative_to(root).parts
        for depth, part in enumerate(parts[:-1]):
            kind = _folder_kind(part)
            if kind == "anomaly" and depth + 1 < len(parts) - 1:
                videos.append(Video(path, parts[depth + 1], 1))
                break
            if kind in ("train_normal", "test_normal"):
                videos.append(Video(path, NORMAL, 0))
                folders[path] = kind
                break
    lists = {name: next(root.rglob(f"{name}.txt"), None) for name in ("Anomaly_Train", "Anomaly_Test")}
    use_lists = split_lists == "official" or (split_lists == "auto" and all(lists.values()))
    if split_lists == "official" and not all(lists.values()):
        raise FileNotFoundError(f"layout.split_lists=official but Anomaly_Train.txt / Anomaly_Test.txt are not "
                                f"under {root}")
    if not use_lists:
        return stratified_split(videos, split_ratios, seed), {"split_source": "stratified", "ratios": split_ratios}
    train_names, test_names = _read_list(lists["Anomaly_Train"]), _read_list(lists["Anomaly_Test"])
    assigned, unlisted = [], []
    for v in videos:
        if v.path.name in test_names or folders.get(v.path) == "test_normal":
            split = "test"
        elif v.path.name in train_names or folders.get(v.path) == "train_normal":
            split = "train"
        else:
            unlisted.append(str(v.path))
            continue
        assigned.append(Video(v.path, v.category, v.y, split))
    report = {"split_source": "official lists", "val_ratio": val_ratio, "unlisted_videos_left_out": unlisted}
    return carve_val(assigned, val_ratio, seed), report


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


@LAYOUTS.register("video_tree", VideoTreeConfig)
def video_tree(root: str | Path, extensions: list[str], normal_categories: list[str], split_ratios: list[float],
               seed: int) -> tuple[list[Video], dict]:
    """Any ``<root>/<category>/**/<video>`` tree, split by video. The listed normal categories get
    y=0, the others y=1; splits are stratified by category."""
    root, videos = Path(root), []
    for path in find_videos(root, extensions):
        category = path.relative_to(root).parts[0] if len(path.relative_to(root).parts) > 1 else ""
        if not category:
            continue
        videos.append(Video(path, category, 0 if category in normal_categories else 1))
    return stratified_split(videos, split_ratios, seed), {"split_source": "stratified", "ratios": split_ratios}
