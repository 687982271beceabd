"""Video reading (PyAV, frame-exact, swscale colour) and writing shared by every task."""

from vidlab.video.count import count_frames
from vidlab.video.decode import (
    VideoEndedError,
    VideoReadError,
    VideoTurn,
    check_colour,
    decode_indexed,
    decode_wanted,
    frame_to_rgb,
    iter_frames,
    read_frames,
)
from vidlab.video.write import (
    VIDEO_SUFFIXES,
    WRITERS,
    FFV1Writer,
    H264Writer,
    VideoWriter,
    check_video_suffix,
    write_gif,
    write_video,
)

__all__ = [
    "VIDEO_SUFFIXES",
    "FFV1Writer",
    "H264Writer",
    "VideoEndedError",
    "VideoReadError",
    "VideoWriter",
    "WRITERS",
    "check_video_suffix",
    "check_colour",
    "count_frames",
    "decode_indexed",
    "decode_wanted",
    "VideoTurn",
    "frame_to_rgb",
    "iter_frames",
    "read_frames",
    "write_gif",
    "write_video",
]
