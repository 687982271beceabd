import json
from dataclasses import asdict
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidlab.video import VideoReadError, count_frames, decode_indexed, iter_frames, read_frames, write_video
from vidlab.video.count import FrameCountCache, video_info

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


# six 16-pixel blocks of different colours, 2 x 3: any turn or mirror moves them somewhere else
BLOCKS = np.kron(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 0], [0, 255, 255], [255, 0, 255]]],
                          np.uint8), np.ones((16, 16, 1), np.uint8))


def write_turned(path: Path, frames: np.ndarray, degrees: int, hflip: bool) -> Path:
    """H.264 stored as ``frames``, with a display matrix: turn ``degrees`` counter-clockwise, then mirror
    left-right if ``hflip`` (what phones and cameras write; PyAV's ``set_display_rotation``)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("degrees", [0, 90, 180, -90])
def test_frames_come_as_displayed(tmp_path: Path, degrees: int, hflip: bool):
    """Every reader gives the picture a player shows, in all eight orientations a display matrix can
    give, and the probe's size is that picture's."""
    path = write_turned(tmp_path / "turned.mp4", np.stack([BLOCKS] * 3), degrees, hflip)
    shown = np.rot90(BLOCKS, degrees // 90)
    shown = shown[:, ::-1] if hflip else shown
    readers = {"iter_frames": list(iter_frames(path)), "read_frames": list(read_frames(path, [2, 0])),
               "fast": [frame for _, frame in decode_indexed(path, [0, 1], colour="fast")]}
    for name, frames in readers.items():
        for frame in frames:
            assert frame.shape == shown.shape and np.abs(frame.astype(int) - shown).mean() < 4, (name, degrees, hflip)
    height, width = shown.shape[:2]
    for method in ("packets", "decode"):
        info = video_info(path, method)
        assert (info.width, info.height, info.n_frames) == (width, height, 3), method
    if not hflip:  # OpenCV applies the turn (as FFmpeg's rotation, and the same pixels), not a mirror
        capture = cv2.VideoCapture(str(path))
        np.testing.assert_array_equal(capture.read()[1][..., ::-1], readers["iter_frames"][0])
        capture.release()
        assert info.rotation % 360 == degrees % 360  # FFmpeg's angle, in [-180, 180]


def test_probes_cached_before_orientation_are_probed_again(tmp_path: Path):
    """A cached size from before sizes were the displayed ones is not trusted."""
    path = write_turned(tmp_path / "phone.mp4", np.stack([BLOCKS] * 3), -90, False)
    info = video_info(path)
    old = {k: v for k, v in asdict(info).items() if k != "rotation"} | {"width": info.height, "height": info.width}
    (tmp_path / "cache.json").write_text(json.dumps({FrameCountCache.key(path, "packets"): old}))
    assert FrameCountCache(tmp_path / "cache.json").get(path, "packets") is None
    cache = FrameCountCache(tmp_path / "cache.json")
    cache.put(path, "packets", info)
    assert cache.get(path, "packets") == info
