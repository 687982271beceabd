from pathlib import Path

import numpy as np
import pytest

from vidlab.video import VideoReadError, count_frames, iter_frames, write_video

from conftest import moving_square_frames


def test_video_round_trip(square_video: Path):
    frames = moving_square_frames()
    decoded = np.stack(list(iter_frames(square_video)))
    assert decoded.shape == frames.shape and count_frames(square_video) == len(frames)
    # mp4v is lossy: close, and the moving square is where it should be in every frame
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    for t in range(len(frames)):
        assert decoded[t, 18, 10 + 3 * t, 0] > 180 and decoded[t, 34, 10 + 3 * t, 0] < 60
    middle = list(iter_frames(square_video, start=4, stop=7))
    np.testing.assert_array_equal(np.stack(middle), decoded[4:7])


def test_unreadable_video_names_the_file(tmp_path: Path):
    bad = tmp_path / "broken clip.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoReadError, match="broken clip.mp4"):
        list(iter_frames(bad))
    with pytest.raises(VideoReadError, match="missing.mp4"):
        count_frames(tmp_path / "missing.mp4")


def test_writer_is_atomic(tmp_path: Path):
    target = tmp_path / "out.mp4"

    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_video(target, frames(), 24)
    assert list(tmp_path.iterdir()) == []
