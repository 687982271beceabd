"""Clip-index probing cost, in seconds per hour of video: exact packet counting (cold, then from the
frame-count cache) against a full decode (the exact but slow way) and against OpenCV's header estimate
(fast but not exact), on the same generated files, in one run.

    python benchmarks/frame_count.py [--videos 200] [--frames 3000] [--workers 0]

Videos are 320x240, 30 fps, MPEG-4 part 2 (OpenCV), generated once under data/bench_index/.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from vidlab.video import write_video
from vidlab.video.count import FrameCountCache, count_many

ROOT = Path(__file__).resolve().parents[1]


def make_videos(folder: Path, count: int, frames: int) -> list[str]:
    paths = []
    for i in range(count):
        path = folder / f"video_{i:04d}.mp4"
        if not path.exists():
            rng = np.random.default_rng(i)
            base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            write_video(path, (np.roll(base, t, axis=1) for t in range(frames)), 30)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--decode-sample", type=int, default=10, help="videos fully decoded for the decode baseline")
    args = parser.parse_args()
    folder = ROOT / "data" / "bench_index" / f"{args.videos}x{args.frames}"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    paths = make_videos(folder, args.videos, args.frames)
    print(f"videos ready in {time.perf_counter() - start:.0f} s")
    hours = args.videos * args.frames / 30 / 3600
    cache_file = folder / "count_cache.json"
    cache_file.unlink(missing_ok=True)

    start = time.perf_counter()
    cold = count_many(paths, "packets", args.workers, FrameCountCache(cache_file), progress=False)
    cold_s = time.perf_counter() - start
    assert all(p.n_frames == args.frames for p in cold.values()), "packet count disagrees with the written frames"
    start = time.perf_counter()
    count_many(paths, "packets", args.workers, FrameCountCache(cache_file), progress=False)
    cached_s = time.perf_counter() - start

    sample = paths[: args.decode_sample]
    start = time.perf_counter()
    count_many(sample, "decode", args.workers, None, progress=False)
    decode_s = (time.perf_counter() - start) * len(paths) / len(sample)
    start = time.perf_counter()
    header = []
    for path in paths:
        cap = cv2.VideoCapture(path)
        header.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        cap.release()
    header_s = time.perf_counter() - start

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    print(f"machine: {cpu}, {os.cpu_count()} cores; {args.videos} videos x {args.frames} frames, "
          f"320x240 mp4v = {hours:.2f} h of video")
    print("| method | exact | seconds | seconds per hour of video |")
    print("|---|---|---|---|")
    print(f"| packet count, cold (vidlab default) | yes | {cold_s:.2f} | {cold_s / hours:.2f} |")
    print(f"| packet count, frame-count cache | yes | {cached_s:.3f} | {cached_s / hours:.3f} |")
    print(f"| full decode (`frame_count=decode`; {len(sample)} videos, scaled) | yes | {decode_s:.1f} "
          f"| {decode_s / hours:.1f} |")
    print(f"| OpenCV CAP_PROP_FRAME_COUNT (header) | no | {header_s:.2f} | {header_s / hours:.2f} |")


if __name__ == "__main__":
    main()
