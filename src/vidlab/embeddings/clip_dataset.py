"""Clips of an index, streamed for extraction: each video is decoded once, in order, by one reader
thread of the consuming process, and every clip of that video is cut from that pass.

Why threads, not DataLoader worker processes: PyAV releases the GIL while it decodes and converts
colour, so threads decode in parallel, and a batch then never crosses a process boundary. Handed
over between processes, every batch costs a fresh shared-memory segment, whose page faults cost more
than the clip's conversion; in threads the loader runs as fast as processes that hand nothing over
(docs/benchmarks.md, "The loader at the decode ceiling", has the designs measured).

Work is spread by video over ranks and readers. Items are fixed batches: consecutive index rows of
one video, ``batch_size`` at a time, so a batch's contents never depend on what ran before (a resumed
run recomputes exactly the batches it lacks). Each converted frame is copied once into each batch
that holds it, and a reader reuses a batch's array once nothing refers to it any more, so memory
holds only the batches in flight, whatever the video's length.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import IterableDataset

from vidlab.embeddings.chunks import Chunk, shard
from vidlab.embeddings.fan_in import in_threads
from vidlab.video import VideoEndedError, VideoReadError, VideoTurn, check_colour, decode_wanted, frame_to_rgb

Spatial = Callable[[torch.Tensor], torch.Tensor]
BATCHES_PER_READER = 2  # batches each reader may have ready before the consumer takes them (DataLoader's
                        # prefetch_factor)
FRAMES_PER_HANDOVER = 8  # decoded frames a reader's decoding thread hands its converting thread at a time


class BatchArrays:
    """A reader's batch arrays, each reused once no tensor refers to it: a batch is handed out as
    ``torch.from_numpy`` of a fresh view, whose storage holds that view alive, so the view's weak
    reference dies exactly when the last tensor sharing the batch's memory does. A fresh array per
    batch would cost its page faults again every time (a tenth of a clip's decoding at 320x240)."""

    def __init__(self) -> None:
        self._arrays: list[tuple[np.ndarray, weakref.ref | None]] = []

    def take(self, frames: int, frame_shape: tuple[int, ...]) -> np.ndarray:
        """A ``(frames, *frame_shape)`` uint8 view nothing else uses; keep it alive while filling it."""
        for i, (array, user) in enumerate(self._arrays):
            if (user is None or user() is None) and array.shape[1:] == frame_shape and len(array) >= frames:
                view = array[:frames]
                self._arrays[i] = (array, weakref.ref(view))
                return view
        # drop other sizes' free ones
        self._arrays = [(a, u) for a, u in self._arrays if u is not None and u() is not None]
        array = np.empty((frames, *frame_shape), np.uint8)
        view = array[:]
        self._arrays.append((array, weakref.ref(view)))
        return view


@dataclass
class _Filling:
    """A chunk whose frames are being copied in as they are decoded."""

    chunk: Chunk
    frames: np.ndarray  # (len(chunk.distinct), H, W, C)


class VideoClipStream(IterableDataset):
    """Yields ``{"frames": uint8 (U, C, h, w), "clips": (B, T), "rows", "padded"}`` per chunk: the
    chunk's distinct frames and each clip's positions among them (:func:`gather_clips` makes the clips
    where they are consumed, after the resize: overlapping clips share half their frames, so half the
    copies, resizing and transfer), or ``{"failed_rows", "reason"}`` for chunks of a video that cannot
    be read (the extractor applies ``on_error``). ``spatial`` (resize, crop) runs in the reader when
    given; ``None`` leaves the frames at their native size for the device to resize. ``frames`` keeps
    the decoder's channels-last layout (a view, no transposing copy).

    Threads (set by ``extraction.reader_plan``): ``readers`` decode videos in parallel (0: decode in the
    consuming thread itself); with ``decode_apart`` each reader decodes in one thread and converts and
    copies in another (for spare cores: the reader then costs what decoding costs); ``decode_threads``
    is PyAV's thread count per video; ``colour`` the frame conversion (``exact``: swscale's pixels,
    ``fast``: OpenCV's; see :func:`frame_to_rgb`)."""

    def __init__(self, chunks: list[Chunk], spatial: Spatial | None, colour: str = "exact", readers: int = 0,
                 decode_apart: bool = False, decode_threads: int = 0):
        check_colour(colour)
        self.chunks, self.spatial, self.colour = chunks, spatial, colour
        self.readers, self.decode_apart, self.decode_threads = readers, decode_apart, decode_threads
        self.rank, self.world_size = 0, 1  # set on every rank once the process group exists

    def _batch(self, filling: _Filling, last: int) -> dict:
        chunk = filling.chunk
        frames = torch.from_numpy(filling.frames).permute(0, 3, 1, 2)  # (U, C, H, W), channels-last strides
        if self.spatial is not None:
            frames = self.spatial(frames)
        return {"frames": frames, "clips": chunk.clips(), "rows": torch.tensor(chunk.rows),
                "padded": torch.tensor([wanted[-1] > last for wanted in chunk.frames])}

    def _video(self, path: str, chunks: list[Chunk], arrays: BatchArrays, stop: threading.Event) -> Iterator[dict]:
        needed = sorted({i for c in chunks for i in c.distinct})
        decoded = decode_wanted(path, needed, self.decode_threads)
        if self.decode_apart:
            decoded = _decoded_ahead(decoded)
        reformatter, turn = VideoReformatter(), VideoTurn()  # kept across the video's frames
        filling: list[_Filling] = []
        unopened = list(chunks)  # in order of first frame, as make_chunks sorts them
        last, last_rgb = -1, None
        try:
            with closing(decoded):
                for index, frame in decoded:
                    if stop.is_set():
                        return
                    rgb = frame_to_rgb(frame, self.colour, reformatter, turn)
                    while unopened and unopened[0].first_frame <= index:
                        chunk = unopened.pop(0)
                        filling.append(_Filling(chunk, arrays.take(len(chunk.distinct), rgb.shape)))
                    for open_chunk in filling:
                        if open_chunk.frames.shape[1:] != rgb.shape:
                            raise VideoReadError(f"{path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, earlier "
                                                 f"frames {open_chunk.frames.shape[2]}x{open_chunk.frames.shape[1]}")
                        position = open_chunk.chunk.position.get(index)
                        if position is not None:
                            open_chunk.frames[position] = rgb
                    last, last_rgb = index, rgb
                    while filling and filling[0].chunk.last_frame <= index:
                        yield self._batch(filling.pop(0), last)
        except VideoReadError as err:
            if last < 0 or not isinstance(err, VideoEndedError):
                for chunk in [f.chunk for f in filling] + unopened:
                    yield {"failed_rows": torch.tensor(chunk.rows), "reason": str(err)}
                return
        # the video ended early: every frame past its end repeats the last one read, recorded per row
        filling += [_Filling(c, arrays.take(len(c.distinct), last_rgb.shape)) for c in unopened]
        for open_chunk in filling:
            for index, position in open_chunk.chunk.position.items():
                if index > last:
                    open_chunk.frames[position] = last_rgb
            yield self._batch(open_chunk, last)

    def _read(self, chunks: list[Chunk], stop: threading.Event) -> Iterator[dict]:
        """Every batch of ``chunks``, video by video, in one thread."""
        by_video: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            by_video.setdefault(chunk.path, []).append(chunk)
        arrays = BatchArrays()
        for path, video_chunks in by_video.items():
            yield from self._video(path, video_chunks, arrays, stop)

    def _read_in_thread(self, chunks: list[Chunk], stop: threading.Event) -> Iterator[dict]:
        """:meth:`_read` in a reader thread, its torch work (the resize) on one core: a reader is one
        core's work, and torch's uint8 resize gives pixels that depend on its thread count (one level
        here and there), so readers resize as the worker processes before them did, on one thread on
        every machine (torch's thread count is the calling thread's own: the consumer keeps its own)."""
        torch.set_num_threads(1)
        yield from self._read(chunks, stop)

    def __iter__(self) -> Iterator[dict]:
        readers = max(1, self.readers)
        shards = [shard(self.chunks, self.rank * readers + k, self.world_size * readers) for k in range(readers)]
        if self.readers == 0:
            yield from self._read(shards[0], threading.Event())
        else:
            yield from in_threads([partial(self._read_in_thread, s) for s in shards], BATCHES_PER_READER * readers)


def _decoded_ahead(decoded: Iterator[tuple[int, av.VideoFrame]]) -> Iterator[tuple[int, av.VideoFrame]]:
    """``decoded`` produced in a thread of its own, :data:`FRAMES_PER_HANDOVER` frames per hand-over: a
    hand-over per frame costs the two threads more (queue and GIL) than converting the frame does."""

    def groups(_: threading.Event) -> Iterator[list]:
        group: list = []
        with closing(decoded):
            try:
                for item in decoded:
                    group.append(item)
                    if len(group) == FRAMES_PER_HANDOVER:
                        yield group
                        group = []
            except Exception:  # the frames decoded before the error first (a video that ends early keeps them)
                if group:
                    yield group
                raise
            if group:
                yield group

    with closing(in_threads([groups], 2)) as handed:
        for group in handed:
            yield from group
