"""Where restoration videos come from: generated moving digits, or a user's folder of videos.

Both give, per split, the video files and their decodable frame counts; clips are cut from them.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidlab.errors import InputError
from vidlab.restoration.config import MovingDigitsConfig, VideoFolderConfig
from vidlab.restoration.digits import MovingDigits, load_mnist_idx
from vidlab.splits import SPLITS
from vidlab.video import VideoReadError, write_video
from vidlab.video.probe import probe_video


@dataclass(frozen=True)
class ClipRef:
    """One clip: frames ``[start, start + length)`` of video ``video_idx`` of a split."""

    path: str
    video_idx: int
    clip_idx: int
    start: int
    length: int


def cut_clips(video_idx: int, path: str, n_frames: int, clip_frames: int) -> list[ClipRef]:
    """Non-overlapping clips from frame 0 while they fit; a shorter tail is left out."""
    return [
        ClipRef(path, video_idx, i, start, clip_frames)
        for i, start in enumerate(range(0, n_frames - clip_frames + 1, clip_frames))
    ]


def moving_digits_clips(cfg: MovingDigitsConfig) -> dict[str, list[ClipRef]]:
    """Generate (once; cached as mp4 files) and cut the moving-digits videos of every split."""
    generator_params = {
        k: v for k, v in asdict(cfg).items()
        if k in ("height", "width", "fps", "frames_per_video", "min_digits", "max_digits", "digit_size", "speed_range", "mnist_path", "seed")
    }
    key = hashlib.sha1(json.dumps(generator_params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cfg.cache_dir) / key
    root.mkdir(parents=True, exist_ok=True)
    (root / "generator.json").write_text(json.dumps(generator_params, indent=2))
    mnist = load_mnist_idx(cfg.mnist_path) if cfg.mnist_path else None
    generator = MovingDigits(
        cfg.height, cfg.width, cfg.frames_per_video, cfg.min_digits, cfg.max_digits,
        cfg.digit_size, tuple(cfg.speed_range), mnist,
    )
    clips: dict[str, list[ClipRef]] = {}
    for split in SPLITS:
        clips[split] = []
        for idx in range(getattr(cfg, f"{split}_videos")):
            path = root / split / f"video_{idx:05d}.mp4"
            if not path.exists():  # files appear only whole (atomic write), so presence means done
                rng = np.random.default_rng([cfg.seed, SPLITS.index(split), idx])
                write_video(path, generator.render(rng), cfg.fps)
            clips[split] += cut_clips(idx, str(path), cfg.frames_per_video, cfg.clip_frames)
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
                probe = probe_video(path)  # frame count and fps from one demux, no decode
            except VideoReadError as err:
                raise VideoReadError(f"dataset.path: {err}") from None
            length = cfg.clip_frames
            if cfg.clip_seconds is not None:
                length = max(2, int(round(cfg.clip_seconds * probe.fps)))
            clips[split] += cut_clips(idx, str(path), probe.n_frames, length)
    for split, refs in clips.items():
        if not refs and split != "val":
            raise InputError(f"dataset: split {split!r} has no clip; add videos or shorten the clips")
    return clips


def build_clips(cfg: MovingDigitsConfig | VideoFolderConfig) -> dict[str, list[ClipRef]]:
    if isinstance(cfg, MovingDigitsConfig):
        return moving_digits_clips(cfg)
    return video_folder_clips(cfg)
