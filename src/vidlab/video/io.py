"""Sequential, streaming video I/O (OpenCV) and atomic writers.

Frames are RGB uint8 ``(H, W, 3)``. Reading is strictly in decode order: OpenCV's frame seeks are not
frame-exact on many files, so skipping uses ``grab()`` (decode without colour conversion).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


class VideoReadError(RuntimeError):
    """A video file that cannot be opened or decoded; the message names the file."""


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise VideoReadError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoReadError(f"cannot open video (unreadable or not a video): {path}")
    return cap


def iter_frames(
    path: str | os.PathLike, start: int = 0, stop: int | None = None
) -> Iterator[np.ndarray]:
    """Yield frames ``start <= i < stop`` in order, one at a time (memory stays one frame)."""
    cap = _open(path)
    try:
        index = 0
        while index < start:
            if not cap.grab():
                raise VideoReadError(f"{path}: ended at frame {index}, before start frame {start}")
            index += 1
        while stop is None or index < stop:
            ok, frame = cap.read()
            if not ok:
                if index == 0:
                    raise VideoReadError(f"no decodable frame in video: {path}")
                if stop is not None:
                    raise VideoReadError(f"{path}: ended at frame {index}, before frame {stop}")
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def count_frames(path: str | os.PathLike) -> int:
    """Frames actually decodable (the header's frame count is only an estimate)."""
    cap = _open(path)
    try:
        n = 0
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise VideoReadError(f"no decodable frame in video: {path}")
    return n


def video_fps(path: str | os.PathLike) -> float:
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    return fps if fps > 0 else 24.0


def _temporary_sibling(path: Path) -> Path:
    # Keep the suffix: OpenCV and Pillow choose the container from it.
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


class VideoWriter:
    """Streaming mp4v (MPEG-4 part 2) writer of RGB frames; the file appears only when closed
    without error (written under a temporary name, then renamed)."""

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path, self.fps = Path(path), fps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temporary_sibling(self.path)
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"cannot open a video writer for {self.path}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.release()
        if exc_type is None and self.frames > 0:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        if exc_type is None:
            raise ValueError(f"no frames to write to {self.path}")


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write RGB frames as an mp4v video, atomically."""
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def write_gif(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write RGB frames as a looping GIF, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    if not images:
        raise ValueError(f"no frames to write to {path}")
    tmp = _temporary_sibling(path)
    try:
        images[0].save(
            tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
