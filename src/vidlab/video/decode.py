"""Every task's video reading (PyAV): frames are counted in decode (presentation) order, never sought.

Seeking by timestamp is not frame-exact on streams with B-frames and long GOPs, so frames are found
by decoding from the start and counting; only the requested frames are converted to RGB.

Colour: ``exact`` (the default) gives PyAV's ``to_ndarray(format="rgb24")`` pixels (swscale's), so
embeddings match what other tools compute: OpenCV's ``VideoCapture`` gives the same pixels on 8-bit
video of even size (tests/video/test_colour.py says where and why it does not). ``fast`` is OpenCV's BT.601
I420 conversion of the raw planes, a few levels off (docs/benchmarks.md, "Colour conversion").

Orientation: frames come as a player shows them. A phone stores a portrait video sideways with a
display matrix (the "rotate" tag of old); FFmpeg attaches that matrix to every decoded frame, and
:func:`frame_to_rgb` applies it (quarter turns and mirrors), as OpenCV's ``VideoCapture`` and the
``ffmpeg`` command do by default. Models, stains and previews then all see upright content.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter


class VideoReadError(RuntimeError):
    """A video file that cannot be opened or decoded; the message names the file."""


class VideoEndedError(VideoReadError):
    """The video decoded cleanly but has fewer frames than requested."""

    def __init__(self, message: str, frames: int):
        super().__init__(message)
        self.frames = frames


COLOURS = ("exact", "fast")
# AVColorSpace values swscale converts with the BT.601 matrix (unspecified, BT470BG, SMPTE170M), and
# AVColorRange values meaning limited range (unspecified, MPEG): what OpenCV's I420 conversion assumes.
_BT601 = (2, 5, 6)
_LIMITED = (0, 1)


def display_turn(frame: av.VideoFrame) -> tuple[bool, bool, bool]:
    """``(transpose, flip rows, flip columns)`` that turn the stored picture into the one a player
    shows, from the frame's display matrix (none: nothing to do). The matrix maps a stored pixel
    ``(x, y)`` to ``(a*x + c*y, b*x + d*y)`` (FFmpeg's ``libavutil/display.h``, rows downwards);
    an angle that is not a multiple of 90 degrees goes to the nearest one."""
    side_data = frame.side_data
    # most frames have none: get's miss costs 6x len
    matrix = side_data.get("DISPLAYMATRIX") if len(side_data) else None
    if matrix is None:
        return False, False, False
    a, b, _, c, d = np.frombuffer(matrix, np.int32)[:5].tolist()
    if abs(b) > abs(a):  # a quarter turn: the displayed row follows the stored column
        return True, b < 0, c < 0
    return False, d < 0, a < 0


class VideoTurn:
    """The display turn of one video's frames (:func:`display_turn`), its matrix read on the first
    frame. PyAV's ``frame.side_data`` ties a frame and its side-data container in a reference cycle,
    so every frame whose side data is read lives, decoder buffer and all, until the cyclic garbage
    collector runs, which decoding rarely triggers: memory grew with each frame decoded. The matrix
    is the stream's, which FFmpeg copies to every frame; a frame whose rotation (read without the
    container) differs from the first one's has its matrix read again."""

    def __init__(self) -> None:
        self._turn: tuple[bool, bool, bool] | None = None
        self._rotation = 0

    def of(self, frame: av.VideoFrame) -> tuple[bool, bool, bool]:
        rotation = frame.rotation
        if self._turn is None or rotation != self._rotation:
            self._turn, self._rotation = display_turn(frame), rotation
        return self._turn


def _upright(rgb: np.ndarray, turn: tuple[bool, bool, bool]) -> np.ndarray:
    transpose, flip_rows, flip_columns = turn
    if transpose:
        rgb = rgb.swapaxes(0, 1)
    if flip_rows:
        rgb = rgb[::-1]
    if flip_columns:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)  # a copy only when turned (torch.from_numpy refuses negative strides)


def frame_to_rgb(frame: av.VideoFrame, colour: str = "exact", reformatter: VideoReformatter | None = None,
                 turn: VideoTurn | None = None) -> np.ndarray:
    """RGB uint8 of a decoded frame, turned as its display matrix says (see the module's docstring).

    ``exact``: swscale's pixels, bit for bit those of ``frame.to_ndarray(format="rgb24")`` turned; one
    reformatter reused across a video's frames keeps its swscale context (a fresh one per frame costs
    more than the conversion), and one thread per conversion because parallelism comes from workers.
    ``fast``: OpenCV's I420 conversion where its assumptions hold (8-bit 4:2:0, even sizes, BT.601,
    limited range); on other frames it would be wrong by more than rounding, so they stay exact.
    ``turn``: the video's :class:`VideoTurn`, kept across its frames (None: the frame's own matrix).
    """
    turned = (turn or VideoTurn()).of(frame)
    if (colour == "fast" and frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0
            and frame.colorspace in _BT601 and frame.color_range in _LIMITED):
        return _upright(cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420), turned)
    return _upright((reformatter or VideoReformatter()).reformat(frame, format="rgb24", threads=1).to_ndarray(), turned)


def decode_wanted(path: str | os.PathLike, indices: Iterable[int],
                  threads: int = 0) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(index, decoded frame)`` for each distinct requested index, ascending, in one pass, not
    yet converted (a reader may convert them in another thread: see ``VideoClipStream``); ``threads``
    is the decoder's thread count (0: FFmpeg's choice; 1 when every core already runs a decoder).

    Raises :class:`VideoReadError` (naming the file) if it cannot be decoded or ends before the last
    requested frame; frames before the failure have been yielded.
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return
    if wanted[0] < 0:
        raise ValueError(f"negative frame index {wanted[0]}")
    position, decoded = 0, 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"no video stream: {path}")
            stream = container.streams.video[0]
            stream.thread_count = threads
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index == wanted[position]:
                    yield index, frame
                    position += 1
                    if position == len(wanted):
                        return
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError) as err:
        raise VideoReadError(f"cannot decode {path}: {err}") from None
    raise VideoEndedError(f"{path}: has {decoded} frames, frame {wanted[position]} was requested", decoded)


def check_colour(colour: str) -> None:
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)} (got {colour!r})")


def decode_indexed(path: str | os.PathLike, indices: Iterable[int], colour: str = "exact",
                   threads: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`decode_wanted`'s frames as RGB uint8, ``colour`` picking the conversion (:func:`frame_to_rgb`)."""
    check_colour(colour)
    reformatter, turn = VideoReformatter(), VideoTurn()
    for index, frame in decode_wanted(path, indices, threads):
        yield index, frame_to_rgb(frame, colour, reformatter, turn)


def read_frames(path: str | os.PathLike, indices: Iterable[int], colour: str = "exact") -> np.ndarray:
    """Frames ``indices`` (any order, repeats allowed) of a video, RGB uint8 ``(len(indices), H, W, 3)``,
    exactly those frames on any codec (decoded in order, no seek)."""
    indices = [int(i) for i in indices]
    frames = dict(decode_indexed(path, indices, colour))
    return np.stack([frames[i] for i in indices]) if indices else np.zeros((0, 0, 0, 3), np.uint8)


def _open(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.VideoStream]:
    if not Path(path).is_file():
        raise VideoReadError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        raise VideoReadError(f"cannot open video (unreadable or not a video): {path}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"cannot open video (no video stream): {path}")
    return container, container.streams.video[0]


def iter_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None,
                colour: str = "exact") -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames ``start <= i < stop`` in order, one at a time (memory stays one frame);
    frames before ``start`` are decoded but not converted."""
    container, stream = _open(path)
    index = 0
    try:
        with container:
            reformatter, turn = VideoReformatter(), VideoTurn()
            for frame in container.decode(stream):
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    yield frame_to_rgb(frame, colour, reformatter, turn)
                index += 1
    except (av.FFmpegError, OSError) as err:
        raise VideoReadError(f"cannot decode {path} at frame {index}: {err}") from None
    if index == 0:
        raise VideoReadError(f"no decodable frame in video: {path}")
    if index <= start or (stop is not None and index < stop):
        raise VideoReadError(f"{path}: ended at frame {index}, before frame {stop if index > start else start}")
