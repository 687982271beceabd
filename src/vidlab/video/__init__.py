"""Video decoding and writing shared by every pipeline."""

from vidlab.video.io import (
    VideoReadError,
    VideoWriter,
    count_frames,
    iter_frames,
    video_fps,
    write_gif,
    write_video,
)

__all__ = ["VideoReadError", "VideoWriter", "count_frames", "iter_frames", "video_fps", "write_gif", "write_video"]
