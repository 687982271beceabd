"""Video decoding and writing shared by every pipeline."""

from vidlab.video.decode import VideoEndedError, decode_indexed, read_frames
from vidlab.video.io import (
    VideoReadError,
    VideoWriter,
    count_frames,
    iter_frames,
    video_fps,
    write_gif,
    write_video,
)

__all__ = ["VideoEndedError", "VideoReadError", "VideoWriter", "decode_indexed", "read_frames", "count_frames", "iter_frames", "video_fps", "write_gif", "write_video"]
