"""Restore a stained video with a trained checkpoint (blind: the model finds the stain).

    python -m vidlab.restore CHECKPOINT INPUT OUTPUT [--side-by-side PATH] [--smoothing NAME]
                             [--megapixels N] [--chunk N] [--device cpu|cuda]

Memory is bounded at any resolution and length by a pixel budget (``--megapixels``; the default
U-Net needs about 0.45 GB per megapixel): a forward pass covers at most that many pixels (a frame
larger than the budget is cut into tiles that overlap by the U-Net's receptive field), and so does a
smoothing step; the restored frames held for the smoothing take at most 8 budgets' worth (0.1 GB
per megapixel), or the few frames its window needs when frames are larger. Each frame is restored
once, and blocks carry the neighbours the model and the smoothing read, so the output is the one
the whole video restored at once would give, whatever the budget (up to float rounding).

The output is H.264 in ``.mp4``, ``.mkv`` or ``.avi``, at the input's exact size (odd sizes too).
A progress bar (frames, frames/s) goes to stderr, a one-line summary to stdout.

Exit codes (errors are one line on stderr, and the output folder is left as it was):
  0  restored.
  2  the command cannot work as given, found before any frame is decoded: unsupported output
     format, missing input or checkpoint, an input that is not a video, a file that is not a
     train.py checkpoint of the restoration model (or one whose model needs the stain mask),
     ``--device cuda`` without CUDA, an output that cannot be created, a budget below one tile.
  1  the restore failed while running (decoding, encoding, out of memory, ...).
  130, 143  interrupted (Ctrl-C) or terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import math
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np
from tqdm import tqdm

from vidlab.config import SCHEMAS, build_smoothing_config
from vidlab.video import H264Writer, VideoReadError, check_video_suffix, iter_frames, video_fps
from vidlab.video.probe import probe_video

# torch and Lightning take seconds to import (about 8 s on a 2-core CPU): they are imported where
# they are used, so mistakes in paths and formats are answered at once.
if TYPE_CHECKING:
    import torch

    from vidlab.restoration.module import RestorationModule
    from vidlab.restoration.smoothing import Smoother

DEFAULT_MEGAPIXELS = 1.0  # ~0.45 GB of U-Net activations; 720p frames fit whole, 1080p ones in 3 strips
T = TypeVar("T")


class UsageError(ValueError):
    """The command cannot work as given; raised before any frame is decoded (exit code 2)."""


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def _smoothing_context(smoother: Smoother) -> tuple[int, int, bool]:
    """Frames a smoother reads before and after each frame, and whether the ones before are its own
    outputs (EMA is recursive): what a block must carry to be smoothed as in the whole video."""
    from vidlab.restoration.smoothing import EmaSmoothing, MaskedSmoothing, NoSmoothing, WindowSmoothing

    if isinstance(smoother, EmaSmoothing):
        return 1, 0, True
    if isinstance(smoother, (WindowSmoothing, MaskedSmoothing)):
        return smoother.frames // 2, smoother.frames // 2, False
    if isinstance(smoother, NoSmoothing):
        return 0, 0, False
    raise TypeError(f"no streaming rule for smoothing {type(smoother).__name__}")


def _to_float(frames: list[np.ndarray], rows: slice, cols: slice, device: torch.device) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames -> float ``(T, 3, h, w)`` in [0, 1] of the given region."""
    import torch

    region = np.ascontiguousarray(np.stack([f[rows, cols] for f in frames]))
    return torch.from_numpy(region).permute(0, 3, 1, 2).to(device).float() / 255


class Restorer:
    """Streams frames through the model and the smoothing in blocks of at most ``megapixels``
    million pixels (and at most ``chunk`` frames, if given), on the module's device."""

    def __init__(
        self, module: RestorationModule, smoother: Smoother, megapixels: float = DEFAULT_MEGAPIXELS, chunk: int | None = None
    ):
        self.module, self.smoother, self.device = module, smoother, module.device
        self.pixels, self.chunk = round(megapixels * 1e6), chunk
        depth = module.model_cfg.depth
        # The U-Net's receptive field has a radius of 7 * 2**depth - 5 pixels (two 3x3 convs per
        # level down and up, plus pooling offsets; tests/test_restore.py measures it). Group and
        # instance norms pool statistics over the whole frame, so those models are never tiled (the
        # budget then bounds the batch only).
        self.multiple, self.halo = 2**depth, 7 * 2**depth
        self.tileable = module.model_cfg.norm in ("batch", "none")
        smallest = (self.multiple + 2 * self.halo) ** 2
        if self.pixels < smallest:
            raise UsageError(f"--megapixels {megapixels} is below this model's smallest tile ({smallest / 1e6:.3f} megapixels)")
        if chunk is not None and chunk < 1:
            raise UsageError(f"--chunk must be >= 1 (got {chunk})")

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
        batch = self._frames_per_block(self.pixels, read)
        radius = self.module.model_cfg.frames // 2
        for window, first, count in _blocks(frames, radius, radius, batch):
            restored = torch.empty(count, 3, h, w)
            for tile in tiles:
                clip = _to_float(window, *tile.read, self.device)
                out = self.module.restore_clip(clip, batch=batch, centres=range(first, first + count)).cpu()
                restored[:, :, tile.core[0], tile.core[1]] = out[:, :, tile.inner[0], tile.inner[1]]
            yield from zip(window[first : first + count], restored)

    def _smooth(self, pairs: Iterator[tuple[np.ndarray, torch.Tensor]], h: int, w: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Smoothing in blocks of frames with their context, by strips of rows (every smoother is
        per pixel in space); a recursive smoother gets its last output as the frame before."""
        import torch

        from vidlab.restoration.module import to_uint8

        before, after, recursive = _smoothing_context(self.smoother)
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
            smoothed = torch.empty(count, 3, h, w)
            for top in range(0, h, rows):
                strip = slice(top, top + rows)
                block = torch.stack([frame[:, strip] for frame in restored]).to(self.device)
                out = self.smoother(block, _to_float(stained, strip, slice(None), self.device))
                smoothed[:, :, strip] = out[first : first + count].cpu()
            previous = smoothed[-1]
            yield from zip(stained[first : first + count], to_uint8(smoothed))


# ---------------------------------------------------------------- checks before any work
def _device(name: str | None) -> torch.device:
    """``name`` as a torch device (None: CUDA when available, else the CPU)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name}: {_one_line(err)}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def load_module(checkpoint: str | Path) -> RestorationModule:
    """The restoration model of a train.py checkpoint, on the CPU in eval mode, loaded weights-only
    (no pickled code runs)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {checkpoint}")
    import torch

    from vidlab.restoration.module import RestorationModule

    wanted = f"{checkpoint} is not a train.py checkpoint of vidlab's RestorationModule (e.g. outputs/.../checkpoints/best.ckpt)"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises pickle, zip, EOF, runtime errors for non-checkpoints)
        raise UsageError(f"{wanted} (torch.load, weights only: {type(err).__name__})") from None
    hparams = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    if not isinstance(hparams, dict) or not {"model", "smoothing"} <= hparams.keys() or "state_dict" not in saved:
        raise UsageError(wanted)
    try:
        module = RestorationModule(**hparams)
        module.load_state_dict(saved["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:  # ConfigError is a ValueError; weights that do not fit
        raise UsageError(f"{wanted}: {_one_line(err)}") from None
    if module.model_cfg.mask_channel:
        raise UsageError(f"{checkpoint}: this model needs the stain mask as input; blind restore needs mask_channel=false")
    return module.eval()


def _writer(path: Path, fps: float) -> H264Writer:
    try:
        return H264Writer(path, fps)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None


def restore_video(
    checkpoint: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    side_by_side_path: str | Path | None = None,
    smoothing: str | None = None,
    chunk: int | None = None,
    device: str | None = "cpu",
    megapixels: float = DEFAULT_MEGAPIXELS,
    progress: bool = False,
) -> int:
    """Write the restored video (and optionally input | restored side by side); returns frames written.

    Raises :class:`UsageError` for every problem that can be found before decoding a frame, the
    cheapest first. ``device=None`` picks CUDA when available."""
    outputs = [Path(output_path)] + ([Path(side_by_side_path)] if side_by_side_path else [])
    for path in outputs:
        try:
            check_video_suffix(path)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if not Path(input_path).is_file():
        raise UsageError(f"input not found: {input_path}")
    if len({p.resolve() for p in [Path(input_path), *outputs]}) < len(outputs) + 1:
        raise UsageError("the input, the output and --side-by-side must be different files")
    try:
        probe = probe_video(input_path)
    except VideoReadError as err:
        raise UsageError(str(err)) from None
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(_writer(path, probe.fps or video_fps(input_path))) for path in outputs]
        import torch

        from vidlab.restoration.previews import side_by_side
        from vidlab.restoration.smoothing import build_smoothing

        torch_device = _device(device)
        # channels-last convolutions ran ~25% faster on the CPU here (oneDNN's NHWC kernels)
        module = load_module(checkpoint).to(torch_device, memory_format=torch.channels_last)
        smoother = module.smoother if smoothing is None else build_smoothing(build_smoothing_config(smoothing))
        restorer = Restorer(module, smoother, megapixels, chunk)
        # smoothing=0: the rate shown is the average so far (blocks of frames finish in bursts)
        bar = stack.enter_context(tqdm(total=probe.n_frames, desc="restoring", unit="frame", smoothing=0, disable=not progress))
        for stained, restored in restorer(iter_frames(input_path)):
            writers[0].write(restored)
            if side_by_side_path:
                writers[1].write(side_by_side({"input": stained[None], "restored": restored[None]}, scale=1)[0])
            bar.update()
        return writers[0].frames


def _return_freed_memory() -> None:
    """Have glibc hand big freed blocks back to the OS. Its mmap threshold otherwise rises to 32 MB
    after the first big free, and the U-Net's 4-32 MB feature maps then stay in the heap: peak RSS
    at 1080p crept to 2.2 GB here, against 1.7 GB with this, for ~8% more time in page faults."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD, in bytes


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the writers, which remove their temporary files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vidlab.restore", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .ckpt written by train.py (outputs/.../checkpoints/best.ckpt)")
    parser.add_argument("input", help="the video to restore")
    parser.add_argument("output", help="where to write the restored video (.mp4, .mkv or .avi)")
    parser.add_argument("--side-by-side", help="also write input | restored to this video")
    parser.add_argument("--smoothing", choices=sorted(SCHEMAS["smoothing"]), help="override the checkpoint's smoothing")
    parser.add_argument("--megapixels", type=float, default=DEFAULT_MEGAPIXELS,
                        help="pixels processed at once, in millions: bounds memory (default %(default)s)")
    parser.add_argument("--chunk", type=int, help="at most this many frames per block (default: what --megapixels allows)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    _return_freed_memory()
    start = time.perf_counter()
    try:
        n = restore_video(args.checkpoint, args.input, args.output, args.side_by_side, args.smoothing, args.chunk,
                          args.device, args.megapixels, progress=True)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 (a user gets one line naming the cause, never a traceback)
        print(f"error: restore failed: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    seconds = time.perf_counter() - start
    print(f"restored {n} frames in {seconds:.1f} s ({n / seconds:.2f} frames/s) -> {args.output}")


if __name__ == "__main__":
    main()
