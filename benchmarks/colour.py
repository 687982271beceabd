"""How far ``extraction.colour=fast`` (OpenCV's I420 conversion) is from the default ``exact`` (swscale,
= PyAV ``to_ndarray("rgb24")`` = OpenCV ``VideoCapture``): in pixels, in swin3d_t embeddings, in speed.

    python benchmarks/colour.py [--clips-per-video 3]

Videos: three photographs (scikit-learn's and matplotlib's sample images) filmed by a panning, zooming
virtual camera, 320x240, 30 fps, H.264 yuv420p with GOP 250 and 2 B-frames (PyAV/libx264), untagged
(BT.601, like UCF-Crime). Embeddings: random-init torchvision swin3d_t (``torch.manual_seed(0)``, eval,
head removed) on T=8 frames of each 32-frame clip, through the extraction loader (``VideoClipStream``)
and the weights' transforms (short side 256, centre crop 224, Kinetics mean/std), once per colour.
Random-init embeddings of any two inputs are close, so the cosine between different clips is printed
as the scale. A BT.709-tagged copy of one video shows why ``fast`` keeps swscale on such frames.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import matplotlib.cbook
import numpy as np
import pandas as pd
import torch
from av.video.reformatter import VideoReformatter
from sklearn.datasets import load_sample_image
from torchvision.models.video import Swin3D_T_Weights

from clip_loader import write_h264
from vidlab.embeddings.backbones import load_backbone
from vidlab.embeddings.chunks import gather_clips, make_chunks
from vidlab.embeddings.clip_dataset import VideoClipStream
from vidlab.embeddings.preprocess import WeightsPreprocess
from vidlab.video.decode import VideoTurn, frame_to_rgb

ROOT = Path(__file__).resolve().parents[1]
CLIP_LEN, T = 32, 8


def photographs() -> dict[str, np.ndarray]:
    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"china": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg"),
            "hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}


def filmed(image: np.ndarray, n: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """A camera panning diagonally across ``image`` while zooming in from 1.4x to 1x the frame size."""
    h, w = size
    scale = 1.5 * max(h / image.shape[0], w / image.shape[1])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    for t in range(n):
        s = t / max(1, n - 1)
        ch, cw = int(h * (1.4 - 0.4 * s)), int(w * (1.4 - 0.4 * s))
        y, x = int((big.shape[0] - ch) * s), int((big.shape[1] - cw) * s)
        yield cv2.resize(big[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)


def video(folder: Path, name: str, image: np.ndarray, n: int, size: tuple[int, int] = (240, 320),
          x264_params: str = "") -> str:
    path = folder / f"{name}_{size[1]}x{size[0]}_{n}.mp4"
    if not path.exists():
        tmp = path.with_name(f".{path.name}")
        write_h264(tmp, filmed(image, n, size), size, x264_params)
        tmp.replace(path)
    return str(path)


def decoded(path: str) -> list[av.VideoFrame]:
    with av.open(path) as container:
        return list(container.decode(video=0))


def opencv_frames(path: str) -> np.ndarray:
    cap, frames = cv2.VideoCapture(path), []
    while (read := cap.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


def pixel_error(paths: list[str]) -> None:
    exact, fast, pyav, opencv = [], [], [], []
    for path in paths:
        frames, reformatter = decoded(path), VideoReformatter()
        exact.append(np.stack([frame_to_rgb(f, "exact", reformatter) for f in frames]))
        fast.append(np.stack([frame_to_rgb(f, "fast") for f in frames]))
        pyav.append(np.stack([f.to_ndarray(format="rgb24") for f in frames]))
        opencv.append(opencv_frames(path))
    exact, fast = np.concatenate(exact), np.concatenate(fast)
    same = np.array_equal(exact, np.concatenate(pyav)) and np.array_equal(exact, np.concatenate(opencv))
    diff = np.abs(exact.astype(np.int16) - fast)
    print(f"exact == PyAV rgb24 == OpenCV VideoCapture on every frame: {same}")
    print(f"fast vs exact, {len(exact)} frames 320x240: max {diff.max()} levels, mean {diff.mean():.3f}, "
          f"99.9th percentile {np.percentile(diff, 99.9):.0f}, {100 * (diff > 0).mean():.1f}% of values differ")


def bt709_error(path: str) -> None:
    frames, reformatter = decoded(path), VideoReformatter()
    exact = np.stack([frame_to_rgb(f, "exact", reformatter) for f in frames])
    fast = np.stack([frame_to_rgb(f, "fast") for f in frames])
    i420 = np.stack([cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420) for f in frames])
    forced = np.abs(exact.astype(np.int16) - i420)
    print(f"BT.709-tagged video: fast == exact (swscale kept): {np.array_equal(fast, exact)}; "
          f"OpenCV I420 forced on it: max {forced.max()} levels, mean {forced.mean():.3f}")


def embeddings(paths: list[str], clips_per_video: int) -> None:
    rows = [{"abs_path": p, "start_frame": i * CLIP_LEN, "end_frame": (i + 1) * CLIP_LEN}
            for p in paths for i in range(clips_per_video)]
    table = pd.DataFrame(rows).assign(row=lambda t: np.arange(len(t)))
    weights = Swin3D_T_Weights.DEFAULT
    preprocess = WeightsPreprocess(weights)
    torch.manual_seed(0)
    model = load_backbone("swin3d_t", None)
    out = {}
    for colour in ("exact", "fast"):
        start, parts = time.perf_counter(), []
        for batch in VideoClipStream(make_chunks(table, T, 4), preprocess.spatial, colour):
            with torch.inference_mode():
                parts.append(model(preprocess.normalize(gather_clips(batch["frames"], batch["clips"]))))
        out[colour] = torch.nn.functional.normalize(torch.cat(parts).double(), dim=1)
        print(f"swin3d_t {colour}: {len(table)} clips in {time.perf_counter() - start:.1f} s")
    cos = (out["exact"] * out["fast"]).sum(1)
    between = out["exact"] @ out["exact"].T
    same_video = table.abs_path.to_numpy()[:, None] == table.abs_path.to_numpy()[None, :]
    off_diagonal = ~np.eye(len(table), dtype=bool)
    print(f"cosine(exact, fast) of the same clip, {len(table)} clips: min {cos.min():.5f}, mean {cos.mean():.5f}, "
          f"max {cos.max():.5f}")
    print("scale: cosine between different clips (exact): "
          f"same video mean {between[torch.from_numpy(same_video & off_diagonal)].mean():.5f}, "
          f"different videos mean {between[torch.from_numpy(~same_video)].mean():.5f}")


def conversion_speed(path: str, label: str, repeats: int = 5) -> None:
    """Frames/s of each conversion alone, one thread (as in an extraction worker), best of ``repeats``."""
    frames = decoded(path)
    reformatter, turn = VideoReformatter(), VideoTurn()  # per video, as the readers keep them
    rates = {}
    for colour in ("exact", "fast"):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for frame in frames:
                frame_to_rgb(frame, colour, reformatter, turn)
            best = min(best, time.perf_counter() - start)
        rates[colour] = len(frames) / best
    print(f"conversion alone, {label}: exact {rates['exact']:.0f} frames/s, fast {rates['fast']:.0f} frames/s "
          f"(fast/exact {rates['fast'] / rates['exact']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips-per-video", type=int, default=3, help=f"{CLIP_LEN}-frame clips embedded per video")
    args = parser.parse_args()
    folder = ROOT / "data" / "bench_colour"
    folder.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)  # as in an extraction worker
    n = CLIP_LEN * args.clips_per_video
    images = photographs()
    paths = [video(folder, name, image, n) for name, image in images.items()]
    pixel_error(paths)
    bt709_error(video(folder, "china_bt709", images["china"], 64,
                      x264_params="colormatrix=bt709:colorprim=bt709:transfer=bt709"))
    conversion_speed(paths[0], "320x240")
    conversion_speed(video(folder, "hopper", images["hopper"], 60, (720, 1280)), "1280x720")
    embeddings(paths, args.clips_per_video)


if __name__ == "__main__":
    main()
