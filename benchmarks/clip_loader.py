"""Clip-loader throughput for embedding extraction, in clips/s, on the same generated files in one run:
vidlab's loader (each video decoded once, in order) against the notebook's loader (one OpenCV seek per
sampled frame) and against the decode ceiling (PyAV decoding every frame, no conversion, expressed
in clips/s at this stride: frames/s / stride). vidlab's loader is timed with each colour conversion
(``extraction.colour``): exact (the default, swscale) and fast (OpenCV's I420).

    python benchmarks/clip_loader.py [--videos 8] [--seconds 60] [--notebook-clips 64]

Videos: 320x240, 30 fps, H.264 (GOP 250, 2 B-frames, PyAV/libx264) and MPEG-4 part 2 (OpenCV);
clip_len 32, stride 16, T 8, frames squashed to 224x224 with ImageNet statistics (the notebook's
preprocessing) in both loaders: vidlab's workers deliver uint8 and leave the float normalisation to
the device, the notebook's normalises on the CPU. Model time is not included.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from vidlab.embeddings.chunks import make_chunks, sample_indices
from vidlab.embeddings.clip_dataset import VideoClipStream
from vidlab.embeddings.clip_index import clip_starts
from vidlab.embeddings.extraction import clip_loader, reader_plan
from vidlab.embeddings.preprocess import NotebookPreprocess
from vidlab.video import write_video

ROOT = Path(__file__).resolve().parents[1]
CLIP_LEN, STRIDE, T, SIZE = 32, 16, 8, 224


def _frames(n: int, seed: int, size: tuple[int, int] = (240, 320)):
    base = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 3)
    for t in range(n):
        frame = np.roll(base, 2 * t, axis=1)
        cv2.putText(frame, str(t), (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        yield frame


def write_h264(path: Path, frames: Iterable[np.ndarray], size: tuple[int, int] = (240, 320),
               x264_params: str = "") -> None:
    """H.264 yuv420p, GOP 250, 2 B-frames (PyAV/libx264); ``x264_params`` adds e.g. colour tags."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "2", "g": "250",
                          "x264-params": ":".join(filter(None, ["keyint=250:min-keyint=250:scenecut=0", x264_params]))}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class NotebookClipDataset(Dataset):
    """The notebook's ``ClipDataset.__getitem__``: reopen the video, seek once per sampled frame."""

    def __init__(self, table: pd.DataFrame):
        self.table = table.reset_index(drop=True)
        self.mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        self.std = np.array([0.229, 0.224, 0.225], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> np.ndarray:
        row = self.table.iloc[i]
        cap = cv2.VideoCapture(row["abs_path"])
        frames, last_good = [], None
        for fid in sample_indices(int(row["start_frame"]), int(row["end_frame"]), T):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(fid))
            ok, frame = cap.read()
            if not ok:
                frame = last_good if last_good is not None else np.zeros((SIZE, SIZE, 3), np.uint8)
            else:
                frame = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
                last_good = frame
            frames.append(frame)
        cap.release()
        arr = (np.stack(frames).astype(np.float32) / 255.0 - self.mean) / self.std
        return np.transpose(arr, (3, 0, 1, 2))


def clips_per_second(loader) -> float:
    """Steady state: a first pass starts the (persistent) workers, the second pass is timed."""
    for _ in loader:
        pass
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["rows"]) if isinstance(batch, dict) else len(batch)
    return n / (time.perf_counter() - start)


def decode_ceiling(paths: list[str]) -> float:
    start, frames = time.perf_counter(), 0
    for path in paths:
        with av.open(path) as container:
            frames += sum(1 for _ in container.decode(video=0))
    return frames / (time.perf_counter() - start) / STRIDE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=8, help="videos per codec")
    parser.add_argument("--seconds", type=int, default=60, help="length of each video")
    parser.add_argument("--notebook-clips", type=int, default=64, help="clips timed for the (slow) notebook loader")
    args = parser.parse_args()
    folder = ROOT / "data" / "bench_loader"
    folder.mkdir(parents=True, exist_ok=True)
    n = args.seconds * 30
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores; {args.videos} videos per codec, {n} frames each, 320x240")
    print("| codec | loader | colour | workers | clips/s | vs notebook | vs decode ceiling |")
    print("|---|---|---|---|---|---|---|")
    for codec in ("h264", "mpeg4"):
        paths = []
        for i in range(args.videos):
            path = folder / f"{codec}_{i}_{n}.mp4"
            if not path.exists():
                tmp = path.with_name(f".{path.name}")
                (write_h264(tmp, _frames(n, i)) if codec == "h264" else write_video(tmp, _frames(n, i), 30))
                tmp.replace(path)
            paths.append(str(path))
        rows = [{"abs_path": p, "start_frame": s, "end_frame": s + CLIP_LEN}
                for p in paths for s in clip_starts(n, CLIP_LEN, STRIDE, "drop")]
        table = pd.DataFrame(rows).assign(row=lambda t: np.arange(len(t)))
        ceiling = decode_ceiling(paths)
        notebook = {}
        for workers in (1, cores):
            sample = table.groupby("abs_path").head(args.notebook_clips // len(paths) * workers)
            ds = NotebookClipDataset(sample)
            loader = DataLoader(ds, batch_size=16, num_workers=workers if workers > 1 else 0,
                                persistent_workers=workers > 1)
            notebook[workers] = clips_per_second(loader)
            print(f"| {codec} | notebook (seek per frame) | OpenCV VideoCapture | {workers} "
                  f"| {notebook[workers]:.1f} | 1.0x | {notebook[workers] / ceiling:.2f} |")
        for colour in ("exact", "fast"):
            for workers in (1, cores):
                stream = VideoClipStream(make_chunks(table, T, 16), NotebookPreprocess(SIZE).spatial, colour,
                                         *reader_plan(workers, 1))
                loader = clip_loader(stream, pin_memory=False)
                rate = clips_per_second(loader)
                print(f"| {codec} | vidlab (decode once, in order) | {colour} | {workers} | {rate:.1f} "
                      f"| {rate / notebook[workers]:.1f}x | {rate / ceiling:.2f} |")
        print(f"| {codec} | decode ceiling (PyAV, every frame, 1 process) | none | 1 | {ceiling:.1f} | | 1.00 |")


if __name__ == "__main__":
    main()
