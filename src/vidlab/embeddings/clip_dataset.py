"""Clips of an index, streamed for extraction: each video is decoded once, in order, by one worker,
and every clip of that video is cut from that pass.

Work is spread by video over ranks and DataLoader workers. Items are fixed batches: consecutive
index rows of one video, ``batch_size`` at a time, so a batch's contents never depend on what ran
before (a resumed run recomputes exactly the batches it lacks). Memory holds only the frames that
pending clips still need, whatever the video's length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vidlab.video import VideoEndedError, VideoReadError, decode_indexed

Spatial = Callable[[torch.Tensor], torch.Tensor]


def sample_indices(start: int, end: int, frames: int) -> np.ndarray:
    """The notebook's sampling: ``start + round(linspace(0, max(1, end - start) - 1, T))``."""
    n = max(1, end - start)
    return (start + np.linspace(0, n - 1, frames).round().astype(int)).astype(int)


@dataclass(frozen=True)
class Chunk:
    """A fixed batch: rows (global index row ids) of one video, and each row's sampled frames."""

    path: str
    rows: tuple[int, ...]
    frames: tuple[tuple[int, ...], ...]

    @cached_property
    def last_frame(self) -> int:  # asked once per decoded frame: computed once
        return max(max(f) for f in self.frames)

    @cached_property
    def first_frame(self) -> int:
        return min(min(f) for f in self.frames)


def make_chunks(table: pd.DataFrame, frames: int, batch_size: int) -> list[Chunk]:
    """Chunks of every video in index order; ``table`` has ``row``, ``abs_path``, ``start_frame``, ``end_frame``."""
    chunks = []
    for path, group in table.groupby("abs_path", sort=False):
        group = group.sort_values(["start_frame", "row"])
        rows = group["row"].tolist()
        samples = [tuple(sample_indices(s, e, frames).tolist()) for s, e in zip(group.start_frame, group.end_frame)]
        for i in range(0, len(rows), batch_size):
            chunks.append(Chunk(path, tuple(rows[i : i + batch_size]), tuple(samples[i : i + batch_size])))
    return chunks


def shard(chunks: list[Chunk], rank: int, world_size: int) -> list[Chunk]:
    """Whole videos per reader (rank x worker), round robin by video in index order."""
    videos = list(dict.fromkeys(c.path for c in chunks))
    mine = set(videos[rank::world_size])
    return [c for c in chunks if c.path in mine]


class VideoClipStream(IterableDataset):
    """Yields ``{"x": uint8 (B, T, C, h, w), "rows", "padded"}`` per chunk, or ``{"failed_rows", "reason"}``
    for chunks of a video that cannot be read (the extractor applies ``on_error``). ``spatial`` (resize,
    crop) runs here when given; ``None`` leaves the frames at their native size for the device to resize.
    ``x`` keeps the decoder's channels-last layout (a view, no transposing copy in the worker) and is
    stacked straight into shared memory in a worker (the loader would otherwise copy it there: a third
    of a worker's time per clip at 320x240). ``decode_threads`` is PyAV's thread count per video.
    ``colour`` is the frame conversion (``exact``: swscale's pixels, ``fast``: OpenCV's; see
    :func:`frame_to_rgb`)."""

    def __init__(self, chunks: list[Chunk], spatial: Spatial | None, colour: str = "exact", decode_threads: int = 0):
        self.chunks, self.spatial, self.colour, self.decode_threads = chunks, spatial, colour, decode_threads
        self.rank, self.world_size = 0, 1  # set on every rank once the process group exists

    def _batch(self, chunk: Chunk, frames: dict[int, np.ndarray], last: int) -> dict:
        clips, frames_per_clip = len(chunk.frames), len(chunk.frames[0])
        picked = [frames[min(i, last)] for wanted in chunk.frames for i in wanted]
        x = torch.empty((len(picked), *picked[0].shape), dtype=torch.uint8)
        if get_worker_info() is not None:
            x.share_memory_()  # stacked straight into shared memory: the loader would copy it there
        np.stack(picked, out=x.numpy())
        x = x.permute(0, 3, 1, 2)  # (B*T, C, H, W), channels-last strides
        if self.spatial is not None:
            x = self.spatial(x)
        return {"x": x.unflatten(0, (clips, frames_per_clip)), "rows": torch.tensor(chunk.rows),
                "padded": torch.tensor([any(i > last for i in wanted) for wanted in chunk.frames])}

    def _video(self, path: str, chunks: list[Chunk]) -> Iterator[dict]:
        needed = sorted({i for c in chunks for f in c.frames for i in f})
        frames: dict[int, np.ndarray] = {}
        pending = list(chunks)
        last = -1
        try:
            for index, frame in decode_indexed(path, needed, self.colour, self.decode_threads):
                frames[index], last = frame, index
                while pending and pending[0].last_frame <= index:
                    yield self._batch(pending.pop(0), frames, last)
                    keep_from = pending[0].first_frame if pending else index + 1
                    for old in [i for i in frames if i < keep_from]:
                        del frames[old]
        except VideoReadError as err:
            if last < 0 or not isinstance(err, VideoEndedError):
                for chunk in pending:
                    yield {"failed_rows": torch.tensor(chunk.rows), "reason": str(err)}
                return
        for chunk in pending:  # the video ended early: repeat its last frame, recorded per row
            yield self._batch(chunk, frames, last)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        chunks = shard(self.chunks, self.rank * workers + worker, self.world_size * workers)
        by_video: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_video.setdefault(chunk.path, []).append(chunk)
        for path, video_chunks in by_video.items():
            yield from self._video(path, video_chunks)
