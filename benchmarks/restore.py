"""Restore speed and peak memory per frame size: the real ``python -m vidlab.restore`` run as a
subprocess per size under ``/usr/bin/time -v``, with the fixed 32-frame-chunk restore it replaced
(``src/vidlab/restore.py`` at commit b151dd8) as the baseline on the smallest size, and per size the
floor under any restore: the same video decoded and encoded again with torch imported.

    python benchmarks/restore.py [--frames 48] [--sizes 320x240,1280x720,1920x1080] [--megapixels 1.0]
                                 [--models shipped,default,unet]

Everything is generated under a temporary folder: a checkpoint per model but ``shipped`` (the model
vidlab ships, which ``python -m vidlab.restore IN OUT`` uses), ``default`` (the default config:
``train.py debug=limit logger=none``, the blend-aware model) and ``unet`` (the per-frame U-Net with
masked smoothing, 0.2's defaults: ``model=unet smoothing=masked``), each trained one short epoch, so
the weights are not good, which does not change the cost; and, per size, a moving pattern under a
static stain (the notebook's formula), written as MPEG-4 part 2 by OpenCV, like a user's ordinary video.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidlab.restoration.stains import apply_stain, circular_stain_mask
from vidlab.video import write_video

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "b151dd8"


def make_video(path: Path, width: int, height: int, frames: int) -> Path:
    """Diagonal stripes and a bright square moving right, under a stain a quarter of the height wide."""
    mask = circular_stain_mask(height, width, (width / 2, height / 2), height // 4)
    y, x = np.mgrid[:height, :width]
    side = height // 6

    def frame(t: int) -> np.ndarray:
        stripes = (127 + 100 * np.sin((x + y + 6 * t) / 11.0)).astype(np.uint8)
        image = np.stack([stripes, stripes // 2, 255 - stripes], axis=-1)
        left = (width // 4 + 8 * t) % (width - side)
        image[height // 3 : height // 3 + side, left : left + side] = (240, 220, 90)
        return apply_stain(image[None], mask)[0]

    return write_video(path, (frame(t) for t in range(frames)), fps=24)


# name -> train.py overrides; None: the model vidlab ships, what ``python -m vidlab.restore IN OUT`` uses
MODELS = {"shipped": None, "default": [], "unet": ["model=unet", "smoothing=masked"]}


def make_checkpoint(folder: Path, model: str) -> Path:
    if MODELS[model] is None:
        from vidlab.restoration.loading import DEFAULT_MODEL

        return DEFAULT_MODEL
    run = folder / f"run_{model}"
    subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=limit", "logger=none", *MODELS[model],
                    f"paths.root={folder}", f"hydra.run.dir={run}"], cwd=ROOT, check=True, capture_output=True)
    return run / "checkpoints" / "best.ckpt"


def measure(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (GB) of ``command``, and its stderr."""
    if Path("/usr/bin/time").exists():
        wrapped, pattern = ["/usr/bin/time", "-v", *command], r"Maximum resident set size \(kbytes\): (\d+)"
    else:  # a parent of its own, so that RUSAGE_CHILDREN holds this command alone
        report = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); " \
                 "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
        wrapped, pattern = [sys.executable, "-c", report, *command], r"peak (\d+)"
    start = time.perf_counter()
    proc = subprocess.run(wrapped, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return seconds, int(re.findall(pattern, proc.stderr)[-1]) / 2**20, proc.stderr


def restoring_rate(stderr: str) -> float:
    """Frames/s of the restore loop alone: the progress bar's final average (tqdm, smoothing=0)."""
    value, unit = re.findall(r"([\d.]+)(frame/s|s/frame)\]", stderr)[-1]
    return float(value) if unit == "frame/s" else 1 / float(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--sizes", default="320x240,1280x720,1920x1080")
    parser.add_argument("--megapixels", type=float, help="passed to vidlab.restore (default: its own)")
    parser.add_argument("--models", default="default,unet", help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args()
    sizes = [tuple(map(int, size.split("x"))) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="vidlab-bench-restore-") as tmp:
        work = Path(tmp)
        checkpoints = {model: make_checkpoint(work, model) for model in args.models.split(",")}
        budget = ["--megapixels", str(args.megapixels)] if args.megapixels else []
        rows = []
        baseline = work / "restore_b151dd8.py"
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:src/vidlab/restore.py"], cwd=ROOT,
                                capture_output=True, text=True)
        if source.returncode == 0:
            baseline.write_text(source.stdout)
        for width, height in sizes:
            video = make_video(work / f"stained_{width}x{height}.mp4", width, height, args.frames)
            for model, checkpoint in checkpoints.items():
                seconds, rss, stderr = measure([sys.executable, "-m", "vidlab.restore", str(checkpoint), str(video),
                                                str(work / f"restored_{width}x{height}.mp4"), "--device", "cpu",
                                                *budget])
                rows.append((f"{width}x{height}", model, "vidlab.restore", seconds, restoring_rate(stderr), rss))
            # the floor no restore goes below: torch imported, the video decoded and encoded again (H.264)
            seconds, rss, _ = measure([sys.executable, str(ROOT / "benchmarks" / "restore_phases.py"), "--copy",
                                       str(video), str(work / "copy.mp4"), "h264"])
            rows.append((f"{width}x{height}", "-", "decode + encode alone (torch imported)", seconds, None, rss))
            if (width, height) == sizes[0] and baseline.exists() and "unet" in checkpoints:
                seconds, rss, _ = measure([sys.executable, str(baseline), str(checkpoints["unet"]), str(video),
                                           str(work / "restored_baseline.mp4"), "--device", "cpu"])
                rows.append((f"{width}x{height}", "unet", f"baseline ({BASELINE_COMMIT}, 32-frame chunks)", seconds,
                             None, rss))
            os.remove(video)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")),
               platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CUDA {torch.cuda.is_available()}")
    print(f"{args.frames} frames per video; models: shipped (the model vidlab ships), default (the default config's "
          "blend-aware model and smoothing), unet (depth 3, 16 base channels, masked smoothing: 0.2's defaults)")
    print("| size | model | restore | wall s (whole command) | frames/s (whole command) | frames/s (restoring) "
          "| peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for size, model, name, seconds, rate, rss in rows:
        loop = f"{rate:.2f}" if rate is not None else "n/a"
        print(f"| {size} | {model} | {name} | {seconds:.1f} | {args.frames / seconds:.2f} | {loop} | {rss:.2f} |")


if __name__ == "__main__":
    main()
