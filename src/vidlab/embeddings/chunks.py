"""How an index is cut into fixed batches for extraction: each clip's sampled frames (the notebook's
sampling), chunks of consecutive index rows of one video, whole videos per reader, and a batch's
clips gathered from the distinct frames its clips share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch


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
    def distinct(self) -> tuple[int, ...]:
        """The frames the batch holds, each once (overlapping clips share half their frames)."""
        return tuple(sorted({i for wanted in self.frames for i in wanted}))

    @cached_property
    def position(self) -> dict[int, int]:  # asked once per decoded frame: computed once
        """Frame index -> its position in :attr:`distinct`."""
        return {index: k for k, index in enumerate(self.distinct)}

    @property
    def first_frame(self) -> int:
        return self.distinct[0]

    @property
    def last_frame(self) -> int:
        return self.distinct[-1]

    def clips(self) -> torch.Tensor:
        """``(clips, T)`` positions in :attr:`distinct` of each clip's frames (see :func:`gather_clips`)."""
        return torch.tensor([[self.position[i] for i in wanted] for wanted in self.frames])


def gather_clips(frames: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
    """A batch's clips ``(B, T, C, H, W)`` from its distinct frames ``(U, C, H, W)`` (channels-last
    strides, as the stream and the resize hand them over) and their ``(B, T)`` positions: one copy, the
    clips' frames laid out exactly as a stack of them would be, so the model sees the same tensor."""
    return (frames.permute(0, 2, 3, 1).index_select(0, clips.flatten()).permute(0, 3, 1, 2)
            .unflatten(0, tuple(clips.shape)))


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
    """Whole videos per reader (rank x reader), round robin by video in index order."""
    videos = list(dict.fromkeys(c.path for c in chunks))
    mine = set(videos[rank::world_size])
    return [c for c in chunks if c.path in mine]
