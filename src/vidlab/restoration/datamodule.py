"""Clips streamed from video files, stained on the fly, batched for Lightning.

Each video is decoded once per pass, in order, and only one clip is held at a time, so memory does
not grow with video length. Evaluation stains are fixed per (seed, split, video, clip); training
stains are new every epoch. A per-frame model trains on single frames (with their neighbours); a
model that reads the whole clip (``window`` frames) trains on windows of that many frames with the
frames to score in each.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator
from multiprocessing import forkserver
from multiprocessing.context import BaseContext
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vidlab.errors import ConfigError, InputError
from vidlab.restoration.corruption import Corruption
from vidlab.restoration.datasets import ClipRef, MovingDigitsConfig, VideoFolderConfig, build_clips
from vidlab.restoration.nets import neighbour_indices
from vidlab.splits import SPLITS
from vidlab.video import iter_frames


def read_clips(path: str, refs: list[ClipRef], resize: list[int] | None = None) -> Iterator[tuple[ClipRef, np.ndarray]]:
    """Every clip of one video from a single sequential decode; uint8 (T, H, W, 3) per clip."""
    refs = sorted(refs, key=lambda r: r.start)
    frames = iter_frames(path)
    position = 0
    for ref in refs:
        for _ in range(ref.start - position):
            next(frames)
        clip = list(itertools.islice(frames, ref.length))
        position = ref.start + len(clip)
        if len(clip) < ref.length:
            raise InputError(f"{path}: clip {ref.clip_idx} needs frames {ref.start}..{ref.start + ref.length - 1}, "
                             f"video ended at {position}")
        if resize is not None:
            clip = [cv2.resize(f, (resize[1], resize[0]), interpolation=cv2.INTER_AREA) for f in clip]
        yield ref, np.stack(clip)
    frames.close()


def worker_context() -> BaseContext:
    """Where the loader's worker processes come from: a fork server, not ``fork()`` of the training
    process. A training process has threads (MLflow's system metrics, gloo's, the last loader's queue
    feeder still ending), and a child forked while one of them holds a lock can hang for good: a DDP
    rank waited 55 minutes on such a worker. The server is one single-threaded process per training
    with this module (torch, Lightning) imported once, so a worker starts in milliseconds and inherits
    no thread; CPython 3.14 made it Linux's default for this reason. Started early (the input check),
    its imports overlap the run's setup."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    forkserver.ensure_running()
    return context


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


class StainedClipStream(IterableDataset):
    """Yields training samples (k stained frames around a centre, its clean frame, the mask) or,
    with ``train=False``, whole evaluation clips."""

    def __init__(
        self,
        clips: list[ClipRef],
        corruption: Corruption,
        split: str,
        seed: int,
        train: bool,
        context_frames: int = 1,
        samples_per_clip: int = 1,
        shuffle_buffer: int = 1,
        resize: list[int] | None = None,
        window: int | None = None,
    ):
        self.clips, self.corruption, self.split, self.seed = clips, corruption, split, seed
        self.train, self.context_frames, self.window = train, context_frames, window
        self.samples_per_clip, self.shuffle_buffer, self.resize = samples_per_clip, shuffle_buffer, resize

    def __len__(self) -> int:
        return len(self.clips) * (self.samples_per_clip if self.train and self.window is None else 1)

    def _videos(self, pass_seed: int) -> list[str]:
        paths = list(dict.fromkeys(ref.path for ref in self.clips))
        if self.train:
            paths = [paths[i] for i in np.random.default_rng(pass_seed).permutation(len(paths))]
        info = get_worker_info()
        return paths[info.id :: info.num_workers] if info else paths

    def _pass_seed(self) -> int:
        # Same for every worker of one pass (so the video permutation shards cleanly), new each
        # epoch, and reproducible from the run's seed through torch's generator.
        if not self.train:
            return 0
        info = get_worker_info()
        if info is not None:
            return int(info.seed - info.id)
        return int(torch.randint(0, 2**62, (1,)).item())

    def _clips(self, pass_seed: int) -> Iterator[dict]:
        by_path: dict[str, list[ClipRef]] = {}
        for ref in self.clips:
            by_path.setdefault(ref.path, []).append(ref)
        for path in self._videos(pass_seed):
            for ref, clean in read_clips(path, by_path[path], self.resize):
                rng = np.random.default_rng([self.seed, SPLITS.index(self.split), pass_seed % 2**32, ref.video_idx,
                                             ref.clip_idx])
                stain = self.corruption.sample(rng, clean.shape[1], clean.shape[2])
                yield {"ref": ref, "rng": rng, "clean": clean, "stained": stain.apply(clean), "mask": stain.mask,
                       "offset": stain.offset}

    def _samples(self, clip: dict) -> Iterator[dict]:
        length = clip["clean"].shape[0]
        rng = clip["rng"]
        mask = torch.from_numpy(clip["mask"])[None]
        stained, clean = _to_tensor(clip["stained"]), _to_tensor(clip["clean"])
        if self.window is not None:
            if length < self.window:
                raise InputError(f"{clip['ref'].path}: a clip of {length} frames is shorter than the model's window "
                                 f"of {self.window}")
            start = int(rng.integers(length - self.window + 1))
            centres = np.sort(rng.choice(self.window, size=self.samples_per_clip,
                                         replace=self.samples_per_clip > self.window))
            window = slice(start, start + self.window)
            yield {"stained": stained[window], "clean": clean[window][centres], "mask": mask,
                   "centres": torch.from_numpy(centres)}
            return
        centres = rng.choice(length, size=self.samples_per_clip, replace=self.samples_per_clip > length)
        for t in centres:
            yield {"stained": stained[neighbour_indices(int(t), self.context_frames, length)], "clean": clean[t],
                   "mask": mask}

    def __iter__(self) -> Iterator[dict]:
        pass_seed = self._pass_seed()
        if not self.train:
            for clip in self._clips(pass_seed):
                ref = clip["ref"]
                yield {
                    "stained": _to_tensor(clip["stained"]),
                    "clean": _to_tensor(clip["clean"]),
                    "mask": torch.from_numpy(clip["mask"])[None],
                    "offset": torch.from_numpy(clip["offset"]).permute(2, 0, 1),
                    "video_idx": ref.video_idx,
                    "clip_idx": ref.clip_idx,
                }
            return
        rng = np.random.default_rng(pass_seed % 2**32)
        buffer: list[dict] = []
        for clip in self._clips(pass_seed):
            for sample in self._samples(clip):
                buffer.append(sample)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(int(rng.integers(len(buffer))))
        rng.shuffle(buffer)
        yield from buffer


class RestorationDataModule(L.LightningDataModule):
    """Train/val/test streams of stained clips from the configured dataset and corruption."""

    def __init__(
        self, cfg: MovingDigitsConfig | VideoFolderConfig, corruption: Corruption, context_frames: int,
        window: int | None = None
    ):
        super().__init__()
        self.cfg, self.corruption, self.context_frames, self.window = cfg, corruption, context_frames, window
        self.clips: dict[str, list[ClipRef]] = {}

    @property
    def resize(self) -> list[int] | None:
        return getattr(self.cfg, "resize", None)

    def prepare_data(self) -> None:
        self.check_inputs()

    def setup(self, stage: str | None = None) -> None:
        self.check_inputs()  # on ranks other than 0, which do not run prepare_data

    def check_inputs(self) -> None:
        """Generate or probe the videos (once per process) and check that their frames can be batched
        and hold the stain: the task calls it before any MLflow run or checkpoint exists, so a
        misfit is one line and nothing is made."""
        if self.clips:
            return
        clips = build_clips(self.cfg)
        sizes: dict[tuple[int, int], str] = {}  # each frame size, with the first video that has it
        for ref in sorted((ref for refs in clips.values() for ref in refs), key=lambda ref: ref.path):
            sizes.setdefault(ref.size, ref.path)
        if self.resize is None and len(sizes) > 1:
            shown = ", ".join(f"{h}x{w} ({Path(path).name})" for (h, w), path in list(sizes.items())[:3])
            raise ConfigError(f"dataset.resize: the videos differ in frame size ({shown}) and clips of a batch must "
                              "match: set dataset.resize=[height,width]")
        height, width = self.resize if self.resize is not None else next(iter(sizes))
        try:
            self.corruption.check_frame(height, width)
        except ValueError as err:
            raise ConfigError(f"corruption: {err}") from None
        self.clips = clips
        if self.cfg.num_workers:
            worker_context()

    def stream(self, split: str) -> StainedClipStream:
        train = split == "train"
        # A window holds `window` frames: the shuffle buffer keeps about as many frames as per-frame samples would.
        buffer = self.cfg.shuffle_buffer if self.window is None else max(1, self.cfg.shuffle_buffer // self.window)
        return StainedClipStream(
            self.clips[split], self.corruption, split, self.cfg.seed, train, self.context_frames,
            self.cfg.samples_per_clip if train else 1, buffer if train else 1, self.resize, self.window,
        )

    def _loader(self, split: str) -> DataLoader:
        train = split == "train"
        stream = self.stream(split)
        workers = min(self.cfg.num_workers, len({r.path for r in self.clips[split]}))
        # batch_size counts scored frames: a window model's batch holds batch_size // samples_per_clip windows.
        batch = self.cfg.batch_size if self.window is None else max(1, self.cfg.batch_size // self.cfg.samples_per_clip)
        return DataLoader(stream, batch_size=batch if train else 1, num_workers=workers, persistent_workers=False,
                          multiprocessing_context=worker_context() if workers else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
