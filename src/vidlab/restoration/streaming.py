"""Restoring a stream of frames in blocks bounded by a pixel budget: frames larger than the budget
are cut into tiles that overlap by the U-Net's receptive field, and blocks carry the neighbour frames
the model and the smoothing read, so the result is the one the whole video restored at once would
give (up to float rounding). ``python -m vidlab.restore`` is the command around it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np

from vidlab.errors import ConfigError

# torch is imported where it is used: ``python -m vidlab.restore`` answers path and format mistakes
# before paying for it.
if TYPE_CHECKING:
    import torch

    from vidlab.restoration.module import RestorationModule
    from vidlab.restoration.smoothing import Smoother

DEFAULT_MEGAPIXELS = 1.0  # ~0.45 GB of U-Net activations; 720p frames fit whole, 1080p ones in 3 strips
T = TypeVar("T")




# ---------------------------------------------------------------- streaming blocks
def _blocks(items: Iterable[T], before: int, after: int, size: int) -> Iterator[tuple[list[T], int, int]]:
    """Consecutive blocks of up to ``size`` items, each with up to ``before``/``after`` neighbours:
    yields ``(window, first, count)``, the block being ``window[first:first + count]``.

    Neighbours past the ends of the stream are absent, so a consumer that repeats edges (as the
    U-Net's neighbour stacks and the smoothers do) sees exactly what it would see on the whole stream.
    At most ``before + size + after`` items are held."""
    items = iter(items)
    buffer: list[T] = []
    first, ended = 0, False
    while True:
        while not ended and len(buffer) < first + size + after:
            try:
                buffer.append(next(items))
            except StopIteration:
                ended = True
        count = min(size, len(buffer) - first)
        if count == 0:
            return
        yield buffer[: first + count + after], first, count
        drop = max(0, first + count - before)
        buffer, first = buffer[drop:], first + count - drop


def sample_runs(frames: Iterable[np.ndarray], total: int, run: int, count: int = 3,
                pixels: float = 1e8) -> np.ndarray:
    """Up to ``count`` runs of ``run`` consecutive frames spread over a stream of ``total`` frames (the
    first, the middle, the last), at most ``pixels`` pixels in all but one run: what a blind model
    reads to find one stain for the whole video, as one uint8 array ``(N, H, W, 3)`` filled as the
    frames are decoded (at native size the sample is hundreds of MB: it is held once, never stacked
    from a list). Reads the stream to the last frame it keeps."""
    keep: list[int] = []
    out = np.empty((0, 0, 0, 3), np.uint8)
    for index, frame in enumerate(frames):
        if index == 0:
            runs = max(1, min(count, int(pixels // (run * frame.shape[0] * frame.shape[1]))))
            starts = np.unique(np.linspace(0, max(0, total - run), runs).round().astype(int))
            keep = sorted({s + i for s in starts for i in range(run)})
            out = np.empty((len(keep), *frame.shape), np.uint8)
        position = np.searchsorted(keep, index)
        if position < len(keep) and keep[position] == index:
            out[position] = frame
        if index >= keep[-1]:
            return out
    return out[: np.searchsorted(keep, index + 1)] if keep else out


class Tile(NamedTuple):
    """Rows and columns fed to the U-Net (``read``), those it restores (``core``, in the frame) and
    where the core lies inside the read region (``inner``)."""

    read: tuple[slice, slice]
    core: tuple[slice, slice]
    inner: tuple[slice, slice]


def _spans(size: int, core: int, halo: int) -> list[tuple[slice, slice, slice]]:
    spans = []
    for start in range(0, size, core):
        stop, low = min(size, start + core), max(0, start - halo)
        spans.append((slice(low, min(size, stop + halo)), slice(start, stop), slice(start - low, stop - low)))
    return spans


def plan_tiles(height: int, width: int, pixels: int, multiple: int, halo: int) -> list[Tile]:
    """Tiles of at most ``pixels`` read pixels: the whole frame when it fits, else full-width strips,
    else squares. Cores start on the U-Net's pooling grid (multiples of ``multiple``) and are read
    with ``halo`` pixels of real neighbours, so each tile restores its core as the whole frame would."""
    if height * width <= pixels:
        core_h, core_w = height, width
    elif width * (multiple + 2 * halo) <= pixels:
        core_h, core_w = (pixels // width - 2 * halo) // multiple * multiple, width
    else:
        core_h = core_w = (math.isqrt(pixels) - 2 * halo) // multiple * multiple
    return [
        Tile((read_r, read_c), (core_r, core_c), (inner_r, inner_c))
        for read_r, core_r, inner_r in _spans(height, core_h, halo)
        for read_c, core_c, inner_c in _spans(width, core_w, halo)
    ]


def _to_float(frames: list[np.ndarray], rows: slice, cols: slice, device: torch.device) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames -> float ``(T, 3, h, w)`` in [0, 1] of the given region."""
    import torch

    region = np.ascontiguousarray(np.stack([f[rows, cols] for f in frames]))
    return torch.from_numpy(region).permute(0, 3, 1, 2).to(device).float() / 255


def _crop(stains: dict | torch.Tensor | None, tile: Tile) -> dict | torch.Tensor | None:
    """What a model found on whole frames (per segment, or the video's), cut to a tile's pixels."""
    if isinstance(stains, dict):
        return {segment: found.blend[(..., *tile.read)] for segment, found in stains.items()}
    return None if stains is None else stains[(..., *tile.read)]


class Restorer:
    """Streams frames through the model and the smoothing in blocks of at most ``megapixels``
    million pixels (and at most ``chunk`` frames, if given), on the module's device."""

    def __init__(
        self, module: RestorationModule, smoother: Smoother, megapixels: float = DEFAULT_MEGAPIXELS,
        chunk: int | None = None, stain_sample: np.ndarray | list[np.ndarray] | None = None,
    ):
        self.module, self.smoother, self.device = module, smoother, module.device
        self.pixels, self.chunk = round(megapixels * 1e6), chunk
        # Tiles overlap by the model's receptive field (``halo``); a model that is not tileable (a norm
        # pooling over the whole frame) gets whole frames, and the budget then bounds the batch only.
        self.multiple, self.halo = module.net.size_multiple, module.net.halo
        self.window = module.net.window
        # one stain for the whole video, from runs of frames across it (:func:`sample_runs`), when given
        found = stain_sample is not None and len(stain_sample) and self.window is not None
        self.video_stain = module.net.find_video_stain(stain_sample, self.window, module.device) if found else None
        self.tileable = module.net.tileable
        smallest = (self.multiple + 2 * self.halo) ** 2
        if self.pixels < smallest:
            raise ConfigError(f"--megapixels {megapixels} is below this model's smallest tile "
                              f"({smallest / 1e6:.3f} megapixels)")
        if chunk is not None and chunk < 1:
            raise ConfigError(f"--chunk must be >= 1 (got {chunk})")

    def _frames_per_block(self, pixels: int, pixels_per_frame: int, context: int = 0) -> int:
        frames = max(1, pixels // pixels_per_frame - context)
        return frames if self.chunk is None else min(frames, self.chunk)

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(input, restored)`` uint8 ``(H, W, 3)`` frames in order."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            return
        yield from self._smooth(self._restore(itertools.chain([first], frames), *first.shape[:2]), *first.shape[:2])

    def _restore(self, frames: Iterator[np.ndarray], h: int, w: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(input, restored float (3, H, W) on the CPU)``; each frame goes through the model once."""
        import torch

        pixels = self.pixels if self.tileable else h * w
        tiles = plan_tiles(h, w, pixels, self.multiple, self.halo)
        read = max((t.read[0].stop - t.read[0].start) * (t.read[1].stop - t.read[1].start) for t in tiles)
        batch = self._frames_per_block(self.pixels, read)  # frames the model's convolutions take at once
        # per frame (a video-wide stain restores each frame from its own neighbours too): blocks carry
        # the neighbours the model reads, and memory follows the budget whatever the frame size
        per_frame = self.window is None or self.video_stain is not None
        if per_frame:
            radius = self.module.net.context_frames // 2
            before, after, block = radius, radius, batch
        else:  # one stain estimate per aligned segment; a short last one reads the window before it. The
            # segment's frames are held as pixels, but refined ``batch`` at a time: refining a whole
            # segment of 720p frames at once took 6.9 GB
            before, after, block = self.window, 0, self.window * max(1, batch // self.window)
        for window, first, count in _blocks(frames, before, after, block):
            # a window model reads the frames before the block only for a short last segment: the
            # others stay uint8 (at 720p, 16 float frames are 0.18 GB)
            low = 0 if per_frame else min(self.module.net.segment(c, len(window))[0]
                                          for c in range(first, first + count))
            stains = (self.video_stain.blend if self.video_stain is not None else
                      self.module.net.find_stains(window[low:], range(first - low, first - low + count), self.device))
            restored = torch.empty(count, 3, h, w)
            for tile in tiles:
                clip = _to_float(window[low:], *tile.read, self.device)
                out = self.module.restore_clip(clip, batch=batch, centres=range(first - low, first - low + count),
                                               stains=_crop(stains, tile)).cpu()
                restored[:, :, tile.core[0], tile.core[1]] = out[:, :, tile.inner[0], tile.inner[1]]
            yield from zip(window[first : first + count], restored)

    def _smooth(self, pairs: Iterator[tuple[np.ndarray, torch.Tensor]],
                h: int, w: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Smoothing in blocks of frames with their context, by strips of rows (every smoother is
        per pixel in space), each strip converted to uint8 into the output frames as it is smoothed:
        no whole float frame beyond those restored (at 4K, 0.1 GB each, and ``to_uint8``'s
        temporaries as many again). A recursive smoother gets its last output as the frame before."""
        import torch

        from vidlab.restoration.module import to_uint8

        before, after, recursive = self.smoother.context()
        # A smoother computes its context frames too, and drops them: blocks hold up to 8 budgets of
        # frames (12 bytes a pixel: 0.1 GB per budget megapixel) to keep that waste small.
        size = self._frames_per_block(8 * self.pixels, h * w, before + after)
        previous: torch.Tensor | None = None
        for window, first, count in _blocks(pairs, before, after, size):
            stained = [frame for frame, _ in window]
            restored = [frame for _, frame in window]
            if recursive and previous is not None:
                restored[first - 1] = previous
            rows = max(1, self.pixels // (len(window) * w))
            smoothed = np.empty((count, h, w, 3), np.uint8)
            last = torch.empty(3, h, w) if recursive else None
            for top in range(0, h, rows):
                strip = slice(top, top + rows)
                block = torch.stack([frame[:, strip] for frame in restored]).to(self.device)
                out = self.smoother(block, _to_float(stained, strip, slice(None), self.device))[first : first + count]
                smoothed[:, strip] = to_uint8(out)
                if last is not None:
                    last[:, strip] = out[-1].cpu()
            previous = last
            yield from zip(stained[first : first + count], smoothed)
