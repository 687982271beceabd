"""Video decoding and writing shared by every pipeline."""

from vidlab.video.decode import VideoEndedError, decode_indexed, read_frames
from vidlab.video.io import (
    VIDEO_SUFFIXES,
    H264Writer,
    VideoReadError,
    VideoWriter,
    check_video_suffix,
    count_frames,
    iter_frames,
    video_fps,
    write_gif,
    write_video,
)

__all__ = [
    "VIDEO_SUFFIXES",
    "H264Writer",
    "VideoEndedError",
    "VideoReadError",
    "VideoWriter",
    "check_video_suffix",
    "count_frames",
    "decode_indexed",
    "iter_frames",
    "read_frames",
    "video_fps",
    "write_gif",
    "write_video",
]
