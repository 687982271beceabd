"""Restoring a stream of frames in blocks bounded by a pixel budget: frames larger than the budget
are cut into tiles that overlap by the U-Net's receptive field, and blocks carry the neighbour frames
the model and the smoothing read, so the result is the one the whole video restored at once would
give (up to float rounding). ``python -m vidlab.restore`` is the command around it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from vidlab.errors import ConfigError

# torch is imported where it is used: ``python -m vidlab.restore`` answers path and format mistakes
# before paying for it.
if TYPE_CHECKING:
    import torch

    from vidlab.restoration.loading import Restoration
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

    @property
    def read_pixels(self) -> int:
        return (self.read[0].stop - self.read[0].start) * (self.read[1].stop - self.read[1].start)


def _spans(size: int, start: int, stop: int, core: int, halo: int) -> list[tuple[slice, slice, slice]]:
    """Cores of ``core`` pixels from ``start`` to ``stop``, each read with ``halo`` pixels either side
    (within ``size``): ``(read, core, core within read)``."""
    spans = []
    for low_core in range(start, stop, core):
        high_core, low = min(stop, low_core + core), max(0, low_core - halo)
        spans.append((slice(low, min(size, high_core + halo)), slice(low_core, high_core),
                      slice(low_core - low, high_core - low)))
    return spans


def plan_tiles(height: int, width: int, pixels: int, multiple: int, halo: int,
               box: tuple[slice, slice] | None = None) -> list[Tile]:
    """Tiles of at most ``pixels`` read pixels covering ``box`` (rows and columns of the frame; None: all
    of it): the whole box and its neighbours when they fit, else full-width strips, else squares. Cores
    start on the U-Net's pooling grid (multiples of ``multiple``) and are read with ``halo`` pixels of
    real neighbours, so each tile restores its core as the whole frame would. An empty box: no tiles."""
    rows, cols = box or (slice(0, height), slice(0, width))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return []
    top, left = rows.start // multiple * multiple, cols.start // multiple * multiple
    read_h = min(height, rows.stop + halo) - max(0, top - halo)
    read_w = min(width, cols.stop + halo) - max(0, left - halo)
    if read_h * read_w <= pixels:
        core_h, core_w = rows.stop - top, cols.stop - left
    elif read_w * (multiple + 2 * halo) <= pixels:
        core_h, core_w = (pixels // read_w - 2 * halo) // multiple * multiple, cols.stop - left
    else:
        core_h = core_w = (math.isqrt(pixels) - 2 * halo) // multiple * multiple
    return [
        Tile((read_r, read_c), (core_r, core_c), (inner_r, inner_c))
        for read_r, core_r, inner_r in _spans(height, top, rows.stop, core_h, halo)
        for read_c, core_c, inner_c in _spans(width, left, cols.stop, core_w, halo)
    ]


def covered(tiles: list[Tile]) -> tuple[slice, slice]:
    """The rows and columns the tiles' cores cover (empty slices for no tiles)."""
    if not tiles:
        return slice(0, 0), slice(0, 0)
    return (slice(tiles[0].core[0].start, tiles[-1].core[0].stop),
            slice(tiles[0].core[1].start, tiles[-1].core[1].stop))


def _to_float(frames: list[np.ndarray], rows: slice, cols: slice, device: torch.device) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames -> float ``(T, 3, h, w)`` in [0, 1] of the given region."""
    import torch

    region = np.ascontiguousarray(np.stack([f[rows, cols] for f in frames]))
    return torch.from_numpy(region).permute(0, 3, 1, 2).to(device).float() / 255


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` in [0, 1] -> uint8 ``(T, H, W, 3)``."""
    return (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _crop(stains: Any, tile: Tile) -> dict | torch.Tensor | None:
    """What a model found on whole frames (per segment, or the video's), rendered on a tile's pixels."""
    if isinstance(stains, dict):
        return {segment: found.region(*tile.read) for segment, found in stains.items()}
    return None if stains is None else stains.region(*tile.read)


class Restorer:
    """Streams frames through the model (a :class:`~vidlab.restoration.loading.Restoration`, or the
    training's module: their ``net`` on their ``device``) and the smoothing in blocks of at most
    ``megapixels`` million pixels (and at most ``chunk`` frames, if given).

    Once a video's stain is found, only the rows and columns it covers go through the model: a pixel
    the stain does not reach is its own restoration (opacity 0: the inverse blend is the identity and
    the repair is scaled by the opacity), so a 4K frame with a small stain costs a tile, not the frame,
    and a clean video passes through without the model."""

    def __init__(
        self, model: Restoration | RestorationModule, smoother: Smoother, megapixels: float = DEFAULT_MEGAPIXELS,
        chunk: int | None = None, stain_sample: np.ndarray | list[np.ndarray] | None = None,
    ):
        self.net, self.smoother, self.device = model.net, smoother, model.device
        self.pixels, self.chunk = round(megapixels * 1e6), chunk
        # Tiles overlap by the model's receptive field (``halo``); a model that is not tileable (a norm
        # pooling over the whole frame) gets whole frames, and the budget then bounds the batch only.
        self.multiple, self.halo = self.net.size_multiple, self.net.halo
        self.window = self.net.window
        # one stain for the whole video, from runs of frames across it (:func:`sample_runs`), when given
        found = stain_sample is not None and len(stain_sample) and self.window is not None
        self.video_stain = self.net.find_video_stain(stain_sample, self.window, self.device) if found else None
        self.tileable = self.net.tileable
        smallest = (self.multiple + 2 * self.halo) ** 2
        if self.pixels < smallest:
            raise ConfigError(f"--megapixels {megapixels} is below this model's smallest tile "
                              f"({smallest / 1e6:.3f} megapixels)")
        if chunk is not None and chunk < 1:
            raise ConfigError(f"--chunk must be >= 1 (got {chunk})")

    def _frames_per_block(self, pixels: int, pixels_per_frame: int, context: int = 0) -> int:
        frames = max(1, pixels // pixels_per_frame - context)
        return frames if self.chunk is None else min(frames, self.chunk)

    def tiles(self, h: int, w: int) -> list[Tile]:
        """The tiles the model restores of an ``h`` x ``w`` frame: those covering the video's stain when
        it is known (none for a clean video), else the whole frame's."""
        box = None if self.video_stain is None else self.video_stain.box()
        if box is not None and box[0].start >= box[0].stop:
            return []  # no stain: nothing to restore, whatever the model
        if not self.tileable:
            return plan_tiles(h, w, h * w, self.multiple, self.halo)
        return plan_tiles(h, w, self.pixels, self.multiple, self.halo, box)

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(input, restored)`` uint8 ``(H, W, 3)`` frames in order."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            return
        h, w = first.shape[:2]
        tiles = self.tiles(h, w)
        frames = itertools.chain([first], frames)
        pairs = self._restore(frames, tiles, h * w) if tiles else ((frame, None) for frame in frames)
        yield from self._smooth(pairs, covered(tiles), h, w)

    def _restore(self, frames: Iterator[np.ndarray], tiles: list[Tile],
                 frame_pixels: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(input, restored float (3, h, w) on the CPU)``, the restored pixels being those the tiles'
        cores cover; each frame goes through the model once."""
        import torch

        rows, cols = covered(tiles)
        # frames the model's convolutions take at once
        batch = self._frames_per_block(self.pixels, max(tile.read_pixels for tile in tiles))
        # per frame (a video-wide stain restores each frame from its own neighbours too): blocks carry
        # the neighbours the model reads, and memory follows the budget whatever the frame size
        per_frame = self.window is None or self.video_stain is not None
        if per_frame:  # whole frames held: as many as the budget's pixels (a small stain's tile batches more)
            radius = self.net.context_frames // 2
            before, after, block = radius, radius, min(batch, self._frames_per_block(self.pixels, frame_pixels))
        else:  # one stain estimate per aligned segment; a short last one reads the window before it. The
            # segment's frames are held as pixels, but refined ``batch`` at a time: refining a whole
            # segment of 720p frames at once took 6.9 GB
            before, after, block = self.window, 0, self.window * max(1, batch // self.window)
        # the video's stain is rendered once per tile where the tiles read up to 8 budgets of pixels (its
        # blend: 16 bytes a pixel, 0.13 GB at the default budget), else again for each block
        reads = sum(tile.read_pixels for tile in tiles)
        rendered = ([_crop(self.video_stain, tile) for tile in tiles]
                    if self.video_stain is not None and reads <= 8 * self.pixels else None)
        for window, first, count in _blocks(frames, before, after, block):
            # a window model reads the frames before the block only for a short last segment: the
            # others stay uint8 (at 720p, 16 float frames are 0.18 GB)
            low = 0 if per_frame else min(self.net.segment(c, len(window))[0]
                                          for c in range(first, first + count))
            stains = (self.video_stain if self.video_stain is not None else
                      self.net.find_stains(window[low:], range(first - low, first - low + count), self.device))
            restored = torch.empty(count, 3, rows.stop - rows.start, cols.stop - cols.start)
            for index, tile in enumerate(tiles):
                clip = _to_float(window[low:], *tile.read, self.device)
                found = rendered[index] if rendered is not None else _crop(stains, tile)
                with torch.no_grad():
                    out = self.net.restore(clip, np.arange(first - low, first - low + count), batch,
                                           stains=found).cpu()
                core = _within(tile.core[0], rows), _within(tile.core[1], cols)
                restored[(..., *core)] = out[(..., *tile.inner)]
            yield from zip(window[first : first + count], restored)

    def _smooth(self, pairs: Iterator[tuple[np.ndarray, torch.Tensor | None]], area: tuple[slice, slice],
                h: int, w: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Smoothing in blocks of frames with their context, by strips of rows (every smoother is
        per pixel in space), each strip converted to uint8 into the output frames as it is smoothed:
        no whole float frame is made (at 4K, 0.1 GB each). A restored frame is the input's own pixels
        but in ``area``, where the model restored it; a recursive smoother gets its last output as the
        frame before."""
        import torch

        before, after, recursive = self.smoother.context()
        # A smoother computes its context frames too, and drops them: blocks hold up to 8 budgets of
        # frames (12 bytes a pixel: 0.1 GB per budget megapixel) to keep that waste small.
        size = self._frames_per_block(8 * self.pixels, h * w, before + after)
        previous: torch.Tensor | None = None
        for window, first, count in _blocks(pairs, before, after, size):
            stained = [frame for frame, _ in window]
            rows = max(1, self.pixels // (len(window) * w))
            smoothed = np.empty((count, h, w, 3), np.uint8)
            last = torch.empty(3, h, w) if recursive else None
            for top in range(0, h, rows):
                strip = slice(top, min(h, top + rows))
                original = _to_float(stained, strip, slice(None), self.device)
                block = _with_restored(original, [patch for _, patch in window], area, strip)
                if recursive and previous is not None:
                    block = block.clone() if block is original else block
                    block[first - 1] = previous[:, strip].to(self.device)
                out = self.smoother(block, original)[first : first + count]
                smoothed[:, strip] = to_uint8(out)
                if last is not None:
                    last[:, strip] = out[-1].cpu()
            previous = last
            yield from zip(stained[first : first + count], smoothed)


def _within(inner: slice, outer: slice) -> slice:
    """``inner`` (a slice of the frame inside ``outer``) counted from ``outer``'s start."""
    return slice(inner.start - outer.start, inner.stop - outer.start)


def _with_restored(original: torch.Tensor, patches: list[torch.Tensor | None], area: tuple[slice, slice],
                   strip: slice) -> torch.Tensor:
    """A strip of rows of restored frames ``(T, 3, rows, W)``: the input's pixels (``original``, itself
    where no patch meets the strip: the smoothers read their inputs only), with the restored
    ``patches`` (each ``area``'s pixels) where they meet the strip."""
    import torch

    top, bottom = max(strip.start, area[0].start), min(strip.stop, area[0].stop)
    if top >= bottom:
        return original
    block = original.clone()
    block[:, :, top - strip.start : bottom - strip.start, area[1]] = torch.stack(
        [patch[:, top - area[0].start : bottom - area[0].start] for patch in patches]).to(block.device)
    return block
