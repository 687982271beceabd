"""Exact frame counts and frame rates from the stream (PyAV), in parallel, with a cache.

``CAP_PROP_FRAME_COUNT`` is a header estimate that can be wrong; here ``n_frames`` is the number of
video packets demuxed (one per frame for the codecs and containers in use, checked by the tests
against a full decode), or, with ``method="decode"``, the number of frames decoded. Width and height
are those of the frames :mod:`vidlab.video.decode` yields: as displayed, so a phone's portrait video
stored sideways is tall (its display matrix is read from the first decoded frame).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import av
from tqdm import tqdm

from vidlab.files import write_text
from vidlab.video.decode import VideoReadError, display_turn


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float
    width: int  # as displayed
    height: int
    codec: str
    rotation: int  # degrees counter-clockwise the stored picture is turned for display, as ffprobe reports it


def video_info(path: str | os.PathLike, method: str = "packets") -> VideoInfo:
    """Count the frames of the first video stream; raise :class:`VideoReadError` naming the file."""
    if method not in ("packets", "decode"):
        raise ValueError(f"method must be packets or decode (got {method!r})")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"no video stream: {path}")
            stream = container.streams.video[0]
            n, first = 0, None
            if method == "packets":
                stream.thread_count = 1  # one frame to decode: threads would only cost their start (~5 ms a video)
                for packet in container.demux(stream):
                    n += packet.size > 0
                    if first is None:  # decode only up to the first frame, for its display matrix
                        first = next(iter(stream.decode(packet)), None)
            else:
                for frame in container.decode(stream):
                    n, first = n + 1, frame if first is None else first
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            size = stream.codec_context.width, stream.codec_context.height
            turned = first is not None and display_turn(first)[0]
            info = VideoInfo(n, float(rate) if rate else 0.0, *(size[::-1] if turned else size),
                             stream.codec_context.name, first.rotation if first is not None else 0)
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError(f"unreadable video {path}: {err}") from None
    if info.n_frames == 0:
        raise VideoReadError(f"no frame in video: {path}")
    return info


def count_frames(path: str | os.PathLike) -> int:
    """Frames actually decodable, by decoding them all (the header's count is only an estimate)."""
    return video_info(path, "decode").n_frames


class FrameCountCache:
    """Frame counts keyed by (absolute path, size, mtime, method): an unchanged file is never counted twice."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path and self.path.exists():
            self.entries = json.loads(self.path.read_text())

    @staticmethod
    def key(path: str | os.PathLike, method: str) -> str:
        stat = os.stat(path)
        return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{method}"

    def get(self, path: str | os.PathLike, method: str) -> VideoInfo | None:
        """The cached probe, or None; an entry without every field of :class:`VideoInfo` (written before
        orientation was read, when sizes were the stored ones) is probed again."""
        entry = self.entries.get(self.key(path, method))
        return VideoInfo(**entry) if entry and entry.keys() == {f.name for f in fields(VideoInfo)} else None

    def put(self, path: str | os.PathLike, method: str, info: VideoInfo) -> None:
        self.entries[self.key(path, method)] = asdict(info)

    def save(self) -> None:
        if self.path is None:
            return
        write_text(self.path, json.dumps(self.entries))


def _info_or_error(args: tuple[str, str]) -> VideoInfo | str:
    path, method = args
    try:
        return video_info(path, method)
    except VideoReadError as err:
        return str(err)


def count_many(
    paths: list[str], method: str = "packets", workers: int = 0, cache: FrameCountCache | None = None,
    progress: bool = True
) -> dict[str, VideoInfo | str]:
    """Probe every path (a :class:`VideoInfo`, or the error message of a bad file), in parallel."""
    cache = cache or FrameCountCache(None)
    results: dict[str, VideoInfo | str] = {}
    todo = []
    for path in paths:
        cached = cache.get(path, method) if os.path.exists(path) else None
        if cached is not None:
            results[path] = cached
        else:
            todo.append(path)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(todo), desc="counting frames", unit="video", disable=not progress or not todo)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for path, result in zip(todo, pool.map(_info_or_error, [(p, method) for p in todo], chunksize=4)):
                results[path] = result
                bar.update()
    else:
        for path in todo:
            results[path] = _info_or_error((path, method))
            bar.update()
    bar.close()
    for path in todo:
        if isinstance(results[path], VideoInfo):
            cache.put(path, method, results[path])
    cache.save()
    return {path: results[path] for path in paths}
