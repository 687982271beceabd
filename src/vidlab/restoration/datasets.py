"""Where restoration videos come from, one registered choice per ``conf/dataset/<name>.yaml``:
generated moving digits, or a user's folder of videos.

Each dataset's registered target lists its clips from its config: per split, the video files and
their decodable frame counts, cut into clips.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vidlab.errors import InputError
from vidlab.registry import Registry
from vidlab.restoration.digits import MovingDigits, load_mnist_idx
from vidlab.schema import Choice, at_least, check_range, require, seeds
from vidlab.splits import SPLITS
from vidlab.video import VideoReadError, write_video
from vidlab.video.count import video_info

DATASETS = Registry("dataset")  # target: the function listing a checked config's clips per split


@dataclass
class ClipLoaderConfig(Choice):
    """What every restoration dataset shares: how clips are cut, batched and sampled."""

    clip_frames: int
    batch_size: int
    samples_per_clip: int
    num_workers: int
    shuffle_buffer: int
    seed: int

    def __post_init__(self) -> None:
        at_least(2, self, "clip_frames")
        at_least(1, self, "batch_size", "samples_per_clip", "shuffle_buffer")
        at_least(0, self, "num_workers")
        seeds(self, "seed")

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """The (height, width) of every frame when the config alone fixes it (None: the files do)."""
        return None


@dataclass
class MovingDigitsConfig(ClipLoaderConfig):
    cache_dir: str
    height: int
    width: int
    fps: float
    frames_per_video: int
    train_videos: int
    val_videos: int
    test_videos: int
    min_digits: int
    max_digits: int
    digit_size: int
    speed_range: list[float]
    mnist_path: Optional[str]

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
        require(1 <= self.min_digits <= self.max_digits,
                f"need 1 <= min_digits <= max_digits (got {self.min_digits}, {self.max_digits})")
        require(
            0 < self.digit_size < min(self.height, self.width),
            f"digit_size must be in (0, {min(self.height, self.width)}) (got {self.digit_size})",
        )
        check_range("speed_range", self.speed_range, 0.0)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return self.height, self.width

    def generator(self, frames: int | None = None) -> MovingDigits:
        """The videos' generator (real MNIST glyphs when ``mnist_path`` is set), for ``frames`` frames
        (default: ``frames_per_video``)."""
        mnist = load_mnist_idx(self.mnist_path) if self.mnist_path else None
        return MovingDigits(self.height, self.width, frames or self.frames_per_video, self.min_digits, self.max_digits,
                            self.digit_size, tuple(self.speed_range), mnist)


@dataclass
class VideoFolderConfig(ClipLoaderConfig):
    path: str
    extensions: list[str]
    clip_seconds: Optional[float]
    resize: Optional[list[int]]
    split_ratios: list[float]
    split_seed: int

    def __post_init__(self) -> None:
        super().__post_init__()
        seeds(self, "split_seed")
        require(self.clip_seconds is None or self.clip_seconds > 0,
                f"clip_seconds must be > 0 (got {self.clip_seconds})")
        require(
            self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 8),
            f"resize must be null or [height, width] >= 8 (got {self.resize})",
        )
        require(
            len(self.split_ratios) == 3 and min(self.split_ratios) >= 0 and abs(sum(self.split_ratios) - 1) < 1e-6,
            f"split_ratios must be three non-negative numbers summing to 1 (got {self.split_ratios})",
        )


# ---------------------------------------------------------------- sources
@dataclass(frozen=True)
class ClipRef:
    """One clip: frames ``[start, start + length)`` of video ``video_idx`` of a split, whose frames
    are ``size`` (height, width) as stored."""

    path: str
    video_idx: int
    clip_idx: int
    start: int
    length: int
    size: tuple[int, int]


def cut_clips(video_idx: int, path: str, n_frames: int, clip_frames: int, size: tuple[int, int]) -> list[ClipRef]:
    """Non-overlapping clips from frame 0 while they fit; a shorter tail is left out."""
    return [
        ClipRef(path, video_idx, i, start, clip_frames, size)
        for i, start in enumerate(range(0, n_frames - clip_frames + 1, clip_frames))
    ]


@DATASETS.register("moving_digits", MovingDigitsConfig)
def moving_digits_clips(cfg: MovingDigitsConfig) -> dict[str, list[ClipRef]]:
    """Generate (once; cached as mp4 files) and cut the moving-digits videos of every split."""
    generator_params = {
        k: v for k, v in asdict(cfg).items()
        if k in ("height", "width", "fps", "frames_per_video", "min_digits", "max_digits", "digit_size", "speed_range",
                 "mnist_path", "seed")
    }
    key = hashlib.sha1(json.dumps(generator_params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cfg.cache_dir) / key
    root.mkdir(parents=True, exist_ok=True)
    (root / "generator.json").write_text(json.dumps(generator_params, indent=2))
    generator = cfg.generator()
    clips: dict[str, list[ClipRef]] = {}
    for split in SPLITS:
        clips[split] = []
        for idx in range(getattr(cfg, f"{split}_videos")):
            path = root / split / f"video_{idx:05d}.mp4"
            if not path.exists():  # files appear only whole (atomic write), so presence means done
                rng = np.random.default_rng([cfg.seed, SPLITS.index(split), idx])
                write_video(path, generator.render(rng), cfg.fps)
            clips[split] += cut_clips(idx, str(path), cfg.frames_per_video, cfg.clip_frames, (cfg.height, cfg.width))
    return clips


def list_videos(pattern: str, extensions: list[str]) -> list[Path]:
    """A folder (searched recursively) or a glob; sorted so splits never depend on listing order."""
    base = Path(pattern)
    if base.is_dir():
        found = [p for p in base.rglob("*") if p.suffix.lower() in extensions]
    else:
        found = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).suffix.lower() in extensions]
    return sorted(p for p in found if p.is_file())


def split_videos(paths: list[Path], ratios: list[float], seed: int) -> dict[str, list[Path]]:
    """Assign whole videos to splits by a seeded permutation: no clip of a video leaks across splits."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_train = int(round(ratios[0] * len(paths)))
    n_val = int(round(ratios[1] * len(paths)))
    chosen = [paths[i] for i in order]
    return {
        "train": sorted(chosen[:n_train]),
        "val": sorted(chosen[n_train : n_train + n_val]),
        "test": sorted(chosen[n_train + n_val :]),
    }


@DATASETS.register("video_folder", VideoFolderConfig)
def video_folder_clips(cfg: VideoFolderConfig) -> dict[str, list[ClipRef]]:
    """Cut every video of a folder or glob into clips of ``clip_seconds`` or ``clip_frames``."""
    paths = list_videos(cfg.path, [e.lower() for e in cfg.extensions])
    if not paths:
        raise InputError(f"dataset.path: no video ({', '.join(cfg.extensions)}) matches {cfg.path}")
    clips: dict[str, list[ClipRef]] = {}
    for split, split_paths in split_videos(paths, cfg.split_ratios, cfg.split_seed).items():
        clips[split] = []
        for idx, path in enumerate(split_paths):
            try:
                info = video_info(path)  # frame count and fps from one demux, no decode
            except VideoReadError as err:
                raise VideoReadError(f"dataset.path: {err}") from None
            length = cfg.clip_frames
            if cfg.clip_seconds is not None:
                length = max(2, int(round(cfg.clip_seconds * info.fps)))
            clips[split] += cut_clips(idx, str(path), info.n_frames, length, (info.height, info.width))
    for split, refs in clips.items():
        if not refs and split != "val":
            raise InputError(f"dataset: split {split!r} has no clip; add videos or shorten the clips")
    return clips


def build_clips(cfg: ClipLoaderConfig) -> dict[str, list[ClipRef]]:
    """Every split's clips of a dataset's checked config."""
    return DATASETS[cfg.name].target(cfg)
