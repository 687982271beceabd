"""Peer video readers for the benchmarks, one function per library: ``(path, indices) -> uint8 (N, H, W, 3) RGB``.

Each returns the frames at the given 0-based decode-order indices (sorted, unique), the same contract as
``vidlab.video.read_frames``, so a benchmark can time them on equal terms and check their pixels against
vidlab's. Libraries are imported inside the functions: this module imports without either installed, and
:func:`unavailable` says why a peer cannot run so the benchmark prints a row instead of crashing.

Install (neither is a vidlab dependency): ``pip install --no-deps torchcodec`` (a release built for the
installed torch; it loads FFmpeg 4-9 shared libraries from the OS, e.g. Debian's libavcodec59 and friends)
and ``pip install --no-deps decord`` (bundles its own FFmpeg).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def read_torchcodec(path: str, indices: list[int]) -> np.ndarray:
    """torchcodec on the CPU, ``seek_mode="exact"`` (it scans every packet once to index the frames, so
    indices are frames in presentation order, not estimated from timestamps) and ``num_ffmpeg_threads=1`` so
    one process uses one core, like vidlab's workers."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, device="cpu", seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1)
    return decoder.get_frames_at(list(indices)).data.numpy()


def read_decord(path: str, indices: list[int]) -> np.ndarray:
    """decord on the CPU with ``num_threads=1`` so one process uses one core; ``get_batch`` seeks between the
    requested frames (to a keyframe, then decodes forward) rather than decoding the whole video."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(list(indices)).asnumpy()


PEERS: dict[str, Callable[[str, list[int]], np.ndarray]] = {"torchcodec": read_torchcodec, "decord": read_decord}


def unavailable() -> dict[str, str]:
    """Name -> one-line reason for each peer that cannot run here, so the benchmark prints a row rather than
    failing. torchcodec imports even without FFmpeg (it loads its FFmpeg-linked ops lazily and raises only
    when a decoder is made), so its loader is called here too."""
    reasons = {}
    for name, check in (("torchcodec", _check_torchcodec), ("decord", _check_decord)):
        try:
            check()
        except Exception as err:  # ImportError, OSError, or torchcodec's RuntimeError
            reasons[name] = _one_line(err)
    return reasons


def _check_torchcodec() -> None:
    import torchcodec.decoders  # noqa: F401
    from torchcodec._core import ops

    if not getattr(ops, "_FFMPEG_AVAILABLE", True):
        try:
            ops.load_core_libraries()
        except RuntimeError as err:
            raise RuntimeError(_torchcodec_reason(str(err))) from None


def _check_decord() -> None:
    import decord  # noqa: F401


def _torchcodec_reason(message: str) -> str:
    """torchcodec's loader error is a page of tracebacks, one per FFmpeg major it tried; the useful line is
    the cause that is not "cannot open shared object file" (an FFmpeg that is installed but does not load,
    e.g. a torch/torchcodec mismatch: undefined symbol), else no supported FFmpeg is installed."""
    import torch
    import torchcodec

    causes = [line.strip() for line in message.splitlines() if line.strip().startswith(("OSError:", "RuntimeError:"))]
    causes = [line for line in causes if "Could not load this library" not in line]
    other = [line for line in causes if "cannot open shared object file" not in line]
    if other:
        return f"torchcodec {torchcodec.__version__} with torch {torch.__version__}: {other[0]}"
    version = torchcodec.__version__
    return f"torchcodec {version}: no FFmpeg 4-9 shared libraries found (Debian 12: apt-get install libavcodec59 ...)"


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]
