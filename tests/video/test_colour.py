"""Colour conversion: vidlab's default frames are swscale's, pixel for pixel (real files, no mocks).

PyAV's ``to_ndarray(format="rgb24")`` and OpenCV's ``VideoCapture`` both convert with swscale; they
agree bit for bit wherever swscale uses its unscaled YUV->RGB converters, which ignore the scaling
flags: 8-bit 4:2:0 of even size, 4:2:2 and 4:4:4 (odd sizes included), any colour matrix or range tag.
"""

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from vidlab.embeddings.chunks import gather_clips, make_chunks, sample_indices
from vidlab.embeddings.clip_dataset import VideoClipStream
from vidlab.embeddings.clip_index import COLUMNS
from vidlab.embeddings.config import validate_extract
from vidlab.errors import ConfigError
from vidlab.video import read_frames, write_video

from conftest import ROOT, extract

N = 24  # frames per test video


def colourful(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Moving colour gradients under blurred colour noise: chroma varies everywhere, as in real video."""
    h, w = size
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (h, 2 * w, 3), dtype=np.uint8), (0, 0), 1.5).astype(np.float32)
    y, x = np.mgrid[0:h, 0 : 2 * w].astype(np.float32)
    gradient = np.stack([255 * x / (2 * w), 255 * y / h, 255 - 255 * x / (2 * w)], -1)
    base = np.clip(0.5 * noise + 0.5 * gradient, 0, 255).astype(np.uint8)
    return np.stack([base[:, 2 * t : 2 * t + w] for t in range(n)])


def write_pyav(path: Path, codec: str, pix_fmt: str, size: tuple[int, int], x264_params: str = "") -> Path:
    """PyAV-encoded video; libx264 with 2 B-frames and one GOP for the whole file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.height, stream.width = size
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"bf": "2", "g": "250", "x264-params": ":".join(
                filter(None, ["keyint=250:min-keyint=250:scenecut=0", x264_params]))}
        for frame in colourful(N, size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


STREAMS = {
    "h264_yuv420p_bframes": lambda p: write_pyav(p, "libx264", "yuv420p", (64, 96)),
    "mpeg4_opencv_mp4v": lambda p: write_video(p, colourful(N, (64, 96)), 30),
    "h264_yuv444p_odd_size": lambda p: write_pyav(p, "libx264", "yuv444p", (47, 65)),
}


def pyav_rgb24(path: Path, **reformat) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.reformat(**reformat).to_ndarray() if reformat else f.to_ndarray(format="rgb24")
                         for f in container.decode(video=0)])


def opencv_rgb(path: Path) -> np.ndarray:
    cap, frames = cv2.VideoCapture(str(path)), []
    while (read := cap.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("colour")
    return {name: Path(write(folder / f"{name}.mp4")) for name, write in STREAMS.items()}


@pytest.mark.parametrize("kind", STREAMS)
def test_exact_frames_are_pyav_and_opencv_pixels(videos, kind):
    path = videos[kind]
    pyav, opencv = pyav_rgb24(path), opencv_rgb(path)
    assert len(pyav) == N and np.ptp(pyav[..., 0].astype(int) - pyav[..., 2]) > 200  # colour, not grey
    np.testing.assert_array_equal(pyav, opencv)
    np.testing.assert_array_equal(read_frames(path, range(N)), pyav)
    np.testing.assert_array_equal(read_frames(path, [17, 3, 17]), pyav[[17, 3, 17]])


@pytest.mark.parametrize("codec,pix_fmt", [("mpeg4", "yuv420p"), ("libx264", "yuv420p10le")])
def test_opencv_differs_where_swscale_interpolates_chroma(tmp_path: Path, codec, pix_fmt):
    """Odd-sized 4:2:0 and 10-bit video take swscale's general scaler, whose chroma upsampling follows
    the scaling flags: OpenCV asks for BGR24 with SWS_BICUBIC, PyAV for RGB24 with SWS_BILINEAR (its
    default), so they differ by a few levels. PyAV with OpenCV's request reproduces OpenCV exactly
    (for 10-bit the output order matters too: RGB24 with bicubic is still off). vidlab stays on PyAV's
    rgb24, so its frames do not depend on which of the two a user compares with."""
    path = write_pyav(tmp_path / "v.mp4", codec, pix_fmt, (47, 65) if codec == "mpeg4" else (64, 96))
    pyav, opencv = pyav_rgb24(path), opencv_rgb(path)
    assert 0 < np.abs(pyav.astype(int) - opencv).max() <= 10
    np.testing.assert_array_equal(pyav_rgb24(path, format="bgr24", interpolation="BICUBIC")[..., ::-1], opencv)
    np.testing.assert_array_equal(read_frames(path, range(N)), pyav)


def _stream_frames(path: Path, colour: str | None) -> tuple[np.ndarray, list[int]]:
    """Every sampled frame the extraction loader yields for two 12-frame clips (``None``: its default
    colour), and their indices."""
    table = pd.DataFrame({"row": [0, 1], "abs_path": [str(path)] * 2, "start_frame": [0, 12], "end_frame": [12, 24]})
    chunks = make_chunks(table, 4, 2)
    stream = (VideoClipStream(chunks, torch.nn.Identity()) if colour is None
              else VideoClipStream(chunks, torch.nn.Identity(), colour))
    (batch,) = list(stream)
    indices = [i for s in (0, 12) for i in sample_indices(s, s + 12, 4)]
    clips = gather_clips(batch["frames"], batch["clips"])
    return clips.permute(0, 1, 3, 4, 2).reshape(-1, *clips.shape[3:], 3).numpy(), indices


def test_loader_default_is_exact_and_fast_is_close(videos):
    path = videos["h264_yuv420p_bframes"]
    exact, indices = _stream_frames(path, None)
    np.testing.assert_array_equal(exact, pyav_rgb24(path)[indices])
    fast, _ = _stream_frames(path, "fast")
    diff = np.abs(fast.astype(int) - exact)
    assert 0 < diff.max() <= 16 and diff.mean() < 2  # two roundings of BT.601; benchmarks/colour.py measures it


def test_fast_keeps_swscale_where_the_i420_conversion_does_not_apply(videos, tmp_path: Path):
    """OpenCV's I420 conversion assumes 8-bit 4:2:0, even sizes, BT.601, limited range; on a BT.709
    stream it would use the wrong matrix (many levels off), so such frames stay exact."""
    bt709 = write_pyav(tmp_path / "bt709.mp4", "libx264", "yuv420p", (64, 96),
                       "colormatrix=bt709:colorprim=bt709:transfer=bt709")
    for path in (videos["h264_yuv444p_odd_size"], bt709):
        np.testing.assert_array_equal(read_frames(path, range(N), colour="fast"), pyav_rgb24(path))


def test_colour_is_checked_by_config_and_recorded_in_manifest(tmp_path: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        default = compose("extract", overrides=["paths.output_dir=/tmp/unused", "index=/data/i.csv"])
        wrong = compose("extract", overrides=["paths.output_dir=/tmp/unused", "index=/data/i.csv",
                                              "extraction.colour=foo"])
    assert validate_extract(default).extraction.colour == "exact"
    with pytest.raises(ConfigError) as err:
        validate_extract(wrong)
    assert str(err.value) == "extraction.colour must be exact or fast (got 'foo')"

    video = write_pyav(tmp_path / "v.mp4", "libx264", "yuv420p", (64, 96))
    index = tmp_path / "index_clips.csv"
    pd.DataFrame([["train", 0, "Normal", str(video), 0, 0, 8, 8, 8, 30.0, N]],
                 columns=COLUMNS).to_csv(index, index=False)
    extract(f"index={index}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", "logger=none",
            "backbone=r3d_18", "backbone.weights=null", "backbone.frames_per_clip=4", "extraction.preprocess=notebook",
            "extraction.notebook_size=32", "extraction.colour=fast")
    manifest = json.loads((tmp_path / "outputs/embeddings/r3d_18_T4/manifest.json").read_text())
    assert manifest["colour"]["mode"] == "fast" and "I420" in manifest["colour"]["conversion"]
