"""Restore a stained video (blind: the model finds the stain).

    python -m vidlab.restore [MODEL] INPUT OUTPUT [--side-by-side PATH] [--smoothing NAME] [--report PATH.json]
                             [--megapixels N] [--chunk N] [--device cpu|cuda] [--codec h264|mp4v|ffv1]

MODEL (default: the model vidlab ships, :data:`~vidlab.restoration.loading.DEFAULT_MODEL`) is a train.py checkpoint or
an MLflow URI (``runs:/<run id>/checkpoints/best.ckpt``, ``runs:/<run id>/model``, ``models:/<name>/<version>``).
Memory is bounded at any size and length by ``--megapixels``; the output, whatever the budget, is the whole video
restored at once, at the input's exact size and upright (:mod:`vidlab.restoration.streaming`, ``docs/restoration.md``).

Exit codes (errors are one line on stderr, and the output folder is left as it was):
  0  restored.
  2  the command cannot work as given, found before any frame is decoded (a path, format, model, device or budget).
  1  the restore failed while running (decoding, encoding, out of memory, ...).
  130, 143  interrupted (Ctrl-C) or terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from vidlab.choices import choice_names
from vidlab.errors import EXIT_CONFIG, EXIT_INPUT, ConfigError, no_space_left, one_line
from vidlab.files import write_text
from vidlab.restoration.loading import DEFAULT_MODEL, load_restoration
from vidlab.restoration.streaming import DEFAULT_MEGAPIXELS, Restorer, sample_runs
from vidlab.video import WRITERS, FFV1Writer, H264Writer, VideoReadError, VideoWriter, check_video_suffix, iter_frames
from vidlab.video.count import VideoInfo, video_info

# torch takes seconds to import: it is imported where it is used, so mistakes in paths and formats
# are answered at once (and Lightning is not imported to restore from a checkpoint file)
if TYPE_CHECKING:
    import torch

    from vidlab.restoration.loading import Restoration
    from vidlab.restoration.stain_model import StainEstimate


# ---------------------------------------------------------------- checks before any work
def _device(name: str | None) -> torch.device:
    """``name`` as a torch device (None: CUDA when available, else the CPU)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name}: {one_line(err)}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def _writer(path: Path, fps: float, codec: str) -> H264Writer | FFV1Writer | VideoWriter:
    try:
        return WRITERS[codec](path, fps)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from None
    except ValueError as err:  # a suffix the codec's container cannot hold (ffv1 needs .mkv)
        raise ConfigError(str(err)) from None


def _checked_inputs(input_path: str | Path, output_path: str | Path, side_by_side_path: str | Path | None,
                    report_path: str | Path | None) -> tuple[list[Path], VideoInfo]:
    """The videos to write and the input's header, once the paths check out: cheapest first, nothing opened."""
    outputs = [Path(output_path)] + ([Path(side_by_side_path)] if side_by_side_path else [])
    for path in outputs:
        try:
            check_video_suffix(path)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if not Path(input_path).is_file():
        raise ConfigError(f"input not found: {input_path}")
    if report_path is not None and (Path(report_path).suffix != ".json" or not Path(report_path).parent.is_dir()):
        raise ConfigError(f"--report {report_path}: expected a .json file in an existing folder")
    if len({p.resolve() for p in [Path(input_path), *outputs]}) < len(outputs) + 1:
        raise ConfigError("the input, the output and --side-by-side must be different files")
    try:
        return outputs, video_info(input_path)
    except VideoReadError as err:
        raise ConfigError(str(err)) from None


def _load_model(checkpoint: str | Path, tracking_uri: str | None, device: str | None,
                info: VideoInfo) -> Restoration:
    """The model on its device, refused when the stain it finds cannot fit in the input's frames."""
    import torch

    torch_device = _device(device)
    # channels-last convolutions ran ~25% faster on the CPU here (oneDNN's NHWC kernels)
    model = load_restoration(checkpoint, tracking_uri).to(torch_device, memory_format=torch.channels_last)
    try:
        model.net.check_frame(info.height, info.width)
    except ValueError as err:
        raise ConfigError(f"model: {checkpoint} finds the stain it was trained on, and its {err}: restore a larger "
                          f"video, or train a model for smaller stains (corruption.radius)") from None
    return model


def _plan(model: Restoration, smoothing: str | None, megapixels: float, chunk: int | None,
          input_path: str | Path, n_frames: int | None) -> tuple[Restorer, int]:
    """The restorer (a blind model's stain found first, from runs of frames), and how many frames that read."""
    from vidlab.restoration.smoothing import SMOOTHINGS

    smoother = model.smoother if smoothing is None else SMOOTHINGS.build(SMOOTHINGS.from_conf(smoothing))
    sample = None
    # a blind model finds one stain for the video: first, runs of frames across it
    if model.net.window is not None:
        with contextlib.closing(iter_frames(input_path)) as frames:
            sample = sample_runs(frames, n_frames or 0, model.net.window)
    restorer = Restorer(model, smoother, megapixels, chunk, sample)
    return restorer, 0 if sample is None else len(sample)  # the sample is dropped here: not kept while restoring


def _write_frames(restorer: Restorer, input_path: str | Path, writers: list[H264Writer | FFV1Writer | VideoWriter],
                  n_frames: int | None, progress: bool) -> None:
    """Restore the input frame by frame into the writers: the restored video, then input | restored if asked."""
    from vidlab.restoration.panels import side_by_side

    # smoothing=0: the rate shown is the average so far (blocks of frames finish in bursts)
    with tqdm(total=n_frames, desc="restoring", unit="frame", smoothing=0, disable=not progress) as bar:
        for stained, restored in restorer(iter_frames(input_path)):
            writers[0].write(restored)
            if len(writers) > 1:
                writers[1].write(side_by_side({"input": stained[None], "restored": restored[None]}, scale=1)[0])
            bar.update()


def restore_video(checkpoint: str | Path, input_path: str | Path, output_path: str | Path,
                  side_by_side_path: str | Path | None = None, smoothing: str | None = None, chunk: int | None = None,
                  device: str | None = "cpu", megapixels: float = DEFAULT_MEGAPIXELS, progress: bool = False,
                  codec: str = "h264", tracking_uri: str | None = None, report_path: str | Path | None = None) -> int:
    """Write the restored video (and optionally input | restored side by side); returns frames written.
    A blind model's findings (stains, area, mean opacity) are logged in one line on stderr, and
    written as JSON to ``report_path`` when given.

    Raises :class:`ConfigError` for every problem that can be found before decoding a frame, the
    cheapest first. ``device=None`` picks CUDA when available."""
    outputs, info = _checked_inputs(input_path, output_path, side_by_side_path, report_path)
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(_writer(path, info.fps or 24.0, codec)) for path in outputs]
        model = _load_model(checkpoint, tracking_uri, device, info)
        with _finding_the_stain_heap():
            restorer, read = _plan(model, smoothing, megapixels, chunk, input_path, info.n_frames)
        _write_frames(restorer, input_path, writers, info.n_frames, progress)
        frames = writers[0].frames
    if restorer.video_stain is not None:  # the video is complete: now what the model found
        report = stain_report(restorer.video_stain.estimate, read, info.height, info.width)
        print(f"stain: {report['summary']}", file=sys.stderr)
        if report_path is not None:
            write_text(report_path, json.dumps(report, indent=2) + "\n")
    return frames


def stain_report(estimate: StainEstimate, frames_read: int, height: int, width: int) -> dict:
    """What a blind model found in a video, as ``--report`` writes it, with a one-line ``summary``."""
    found = estimate.summary(height, width)
    if not found["stains"]:
        line = f"none found ({frames_read} frames read): the video passes through unchanged"
    else:
        line = (f"{found['stains']} stain(s) ({found['hypothesis']}), {100 * found['area_fraction']:.1f}% "
                f"of the frame, mean opacity {found['mean_opacity']:.2f} ({frames_read} frames read)")
    return {"summary": line, "frames_read": frames_read, **found}


TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top kept for reuse: all of it (peak RSS is what bounds memory)
TOP_PAD = 256 << 20  # bytes the heap grows by at once beyond a request (fewer brk calls and first-touch runs)
MMAP_THRESHOLD = 4 << 20  # restoring: blocks from this size up are mapped, and handed back when freed
FINDING_MMAP_THRESHOLD = 64 << 20  # finding the stain: its thousands of 4-64 MB temporaries reused instead
_mmap_threshold_fixed: list[bool] = []  # by _return_freed_memory: the command's process, not a library caller's


def _glibc(function: str, *args: int) -> bool:
    """glibc's ``function(*args)`` (``mallopt``, ``malloc_trim``), true where it did something; False
    where the C library is not glibc (nothing to tune)."""
    with contextlib.suppress(OSError, AttributeError):
        return bool(getattr(ctypes.CDLL("libc.so.6"), function)(*args))
    return False


def _return_freed_memory() -> None:
    """Have glibc hand big freed blocks back to the OS, and keep small ones for the next block. Its mmap
    threshold otherwise rises to 32 MB after the first big free, and the U-Net's 4-32 MB feature maps
    then stay in the heap (peak RSS grew with the frame size). Fixing that threshold also fixes the
    trim threshold at 128 KB, and every decoded frame freed at the heap's top was then given back to the
    OS and faulted in again for the next one; the heap keeps up to ``TRIM_THRESHOLD`` free instead
    (docs/benchmarks.md, "Restore at native size: decoded frames freed as they go")."""
    if _glibc("mallopt", -3, MMAP_THRESHOLD):  # M_MMAP_THRESHOLD, in bytes
        _glibc("mallopt", -1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
        _glibc("mallopt", -2, TOP_PAD)  # M_TOP_PAD
        _mmap_threshold_fixed[:] = [True]


@contextlib.contextmanager
def _finding_the_stain_heap() -> Iterator[None]:
    """While the stain is found, blocks up to ``FINDING_MMAP_THRESHOLD`` come from the heap: the
    estimate makes thousands of 4-64 MB temporaries, and each one mapped afresh was faulted in page by
    page (a 4K video's stain took 77 s, 70 of them in the kernel; 30 s so, at the same peak). Then
    the heap's free memory goes back to the OS (``malloc_trim``: finding the stain leaves 0.1-1 GB of
    it free but resident) and restoring maps its feature maps again (``MMAP_THRESHOLD``). A glibc
    older than 2.35 refuses a threshold above 32 MB: that one then."""
    if _mmap_threshold_fixed:
        _glibc("mallopt", -3, FINDING_MMAP_THRESHOLD) or _glibc("mallopt", -3, 32 << 20)
    try:
        yield
    finally:
        if _mmap_threshold_fixed:
            _glibc("mallopt", -3, MMAP_THRESHOLD)
        _glibc("malloc_trim", 0)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the writers, which remove their temporary files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vidlab.restore", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="[model] input output",
                        help="model (optional; default: the model that ships with vidlab): a .ckpt written by train.py "
                             "(outputs/.../checkpoints/best.ckpt), or an MLflow URI: runs:/<run id>/model, "
                             "runs:/<run id>/checkpoints/best.ckpt, models:/<name>/<version>; input: the video "
                             "to restore; output: where to write the restored video (.mp4, .mkv or .avi)")
    parser.add_argument("--side-by-side", help="also write input | restored to this video")
    parser.add_argument("--smoothing", choices=choice_names("smoothing"), help="override the checkpoint's smoothing")
    parser.add_argument("--megapixels", type=float, default=DEFAULT_MEGAPIXELS,
                        help="pixels processed at once, in millions: bounds memory (default %(default)s)")
    parser.add_argument("--chunk", type=int,
                        help="at most this many frames per block (default: what --megapixels allows)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--codec", choices=sorted(WRITERS), default="h264",
                        help="h264 (default; plays in browsers), mp4v (MPEG-4 part 2, OpenCV) "
                             "or ffv1 (lossless, .mkv)")
    parser.add_argument("--report", help="also write what the model found (stains, area, mean opacity, per segment) "
                                         "to this .json file")
    parser.add_argument("--tracking-uri",
                        help="the MLflow store of runs:/ and models:/ URIs (default: $MLFLOW_TRACKING_URI, "
                             "else mlruns.db in the current folder, else the project's)")
    args = parser.parse_args(argv)
    if len(args.paths) not in (2, 3):
        parser.error(f"expected [model] input output, got {len(args.paths)} paths")
    args.checkpoint, args.input, args.output = ([str(DEFAULT_MODEL)] if len(args.paths) == 2 else []) + args.paths
    # Ctrl-C stops it as it stops train.py and extract.py, even where the parent ignores SIGINT (a
    # background job of a script, a test runner's worker); main() called from Python puts both back
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _terminate),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        _restore(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _restore(args: argparse.Namespace) -> None:
    _return_freed_memory()
    start = time.perf_counter()
    try:
        n = restore_video(args.checkpoint, args.input, args.output, args.side_by_side, args.smoothing, args.chunk,
                          args.device, args.megapixels, progress=True, codec=args.codec, tracking_uri=args.tracking_uri,
                          report_path=args.report)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 (a user gets one line naming the cause, never a traceback)
        if no_space_left(err) is not None:  # written under a temporary name: nothing is left behind
            print(f"error: no space left on {Path(args.output).parent}: free some space and run the same command again",
                  file=sys.stderr)
            raise SystemExit(EXIT_INPUT) from None
        print(f"error: restore failed: {type(err).__name__}: {one_line(err)}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT) from None
    seconds = time.perf_counter() - start
    print(f"restored {n} frames in {seconds:.1f} s ({n / seconds:.2f} frames/s) -> {args.output}")


if __name__ == "__main__":
    main()
