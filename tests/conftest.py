"""Shared fixtures: real video files written with OpenCV, composed real configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vidlab.embeddings.clip_index import COLUMNS, clip_starts

ROOT = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``train.py`` in a subprocess (what users run), returning its output."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def free_port() -> int:
    """A free TCP port on the loopback interface, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, server: subprocess.Popen, seconds: float, log: Path | None = None) -> None:
    """Poll ``url`` until the server answers; fail, with its exit code and log tail, if it exits or
    ``seconds`` pass first."""
    import time
    import urllib.request

    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3):
                return
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
                raise AssertionError(f"no answer from {url} (exit {server.poll()}):\n{tail}") from None
            time.sleep(0.5)


def tiny_overrides(root: Path) -> list[str]:
    """A complete run shrunk to seconds, with its store, data and outputs under ``root``."""
    return [
        "debug=limit",
        f"paths.root={root}",
        f"hydra.run.dir={root}/outputs/run",
        f"hydra.sweep.dir={root}/outputs/sweep",
    ]


def moving_square_frames(n: int = 12, h: int = 40, w: int = 56) -> np.ndarray:
    """A bright square moving right on a dark background, uint8 RGB (n, h, w, 3)."""
    frames = np.full((n, h, w, 3), 16, np.uint8)
    for t in range(n):
        frames[t, 10:26, 2 + 3 * t : 18 + 3 * t] = (230, 200, 90)
    return frames


@pytest.fixture
def square_video(tmp_path: Path) -> Path:
    from vidlab.video import write_video

    return write_video(tmp_path / "square video é.mp4", moving_square_frames(), fps=24)


def write_h264(path: Path, n: int, size: tuple[int, int] = (48, 64), fps: int = 30, gop: int = 250) -> Path:
    """H.264 with B-frames and a long GOP (PyAV/libx264); frame i is uniformly grey level 4*i mod 256."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "2", "g": str(gop), "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(n):
            frame = np.full((*size, 3), (4 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mp4v(path: Path, n: int, size: tuple[int, int] = (48, 64), fps: int = 30) -> Path:
    """MPEG-4 part 2 via OpenCV; frame i is uniformly grey level 4*i mod 256."""
    from vidlab.video import write_video

    return write_video(path, (np.full((*size, 3), (4 * i) % 256, np.uint8) for i in range(n)), fps)


UCF_VIDEOS = {
    # relative path: (frames, writer)
    "Anomaly-Videos-Part-1/Abuse/Abuse001_x264.mp4": (40, "h264"),
    "Anomaly-Videos-Part-1/Abuse/Abuse002_x264.mp4": (50, "mp4v"),
    "Anomaly-Videos-Part-1/Abuse/Abuse003_x264.mp4": (33, "h264"),
    "Anomaly-Videos-Part-2/Robbery/Robbery001_x264.mp4": (40, "mp4v"),
    "Anomaly-Videos-Part-2/Robbery/Robbéry 002 x264.mp4": (41, "h264"),
    "Anomaly-Videos-Part-2/Robbery/Robbery003_x264.mp4": (24, "mp4v"),
    "Training-Normal-Videos-Part-1/Normal_Videos001_x264.mp4": (64, "h264"),
    "Training-Normal-Videos-Part-1/Normal_Videos002_x264.mp4": (48, "mp4v"),
    "Training-Normal-Videos-Part-1/Normal_Videos004_x264.mp4": (36, "mp4v"),
    "Training-Normal-Videos-Part-1/Normal_Videos005_x264.mp4": (10, "mp4v"),  # shorter than one clip
    "Testing_Normal_Videos/Normal_Videos_003_x264.mp4": (40, "h264"),
}
UCF_TRAIN_LIST = ["Abuse/Abuse001_x264.mp4", "Abuse/Abuse003_x264.mp4", "Robbery/Robbery001_x264.mp4",
                  "Robbery/Robbery003_x264.mp4", "Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4"]
UCF_TEST_LIST = ["Abuse/Abuse002_x264.mp4", "Robbery/Robbéry 002 x264.mp4", "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4"]


def make_ucf_tree(root: Path) -> Path:
    """A UCF-Crime-like tree of tiny videos (H.264 with B-frames and mp4v) with official split lists."""
    for rel, (n, kind) in UCF_VIDEOS.items():
        (write_h264 if kind == "h264" else write_mp4v)(root / rel, n)
    (root / "Anomaly_Train.txt").write_text("\n".join(UCF_TRAIN_LIST) + "\n")
    (root / "Anomaly_Test.txt").write_text("\n".join(UCF_TEST_LIST) + "\n")
    return root


@pytest.fixture
def ucf_tree(tmp_path: Path) -> Path:
    return make_ucf_tree(tmp_path / "UCF Crime")


def run_extract(*overrides: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "extract.py"), *overrides], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"extract.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def make_index(folder: Path, videos: dict[str, tuple[int, str, str, int]], clip_len: int = 8, stride: int = 8) -> Path:
    """Write videos and an index_clips.csv for them: name -> (frames, writer, split, y)."""
    rows = []
    for name, (n, kind, split, y) in videos.items():
        path = (write_h264 if kind == "h264" else write_mp4v)(folder / "videos" / name, n)
        for i, start in enumerate(clip_starts(n, clip_len, stride, "drop")):
            rows.append([split, y, "Normal" if y == 0 else "Fight", str(path), i, start, start + clip_len, clip_len, stride, 30.0, n])
    index = folder / "index_clips.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(index, index=False)
    return index


VIDEOS = {
    "normal_a.mp4": (40, "h264", "train", 0),
    "fight b.mp4": (33, "mp4v", "train", 1),
    "normal_c.mp4": (24, "mp4v", "val", 0),
    "fight_d.mp4": (32, "h264", "test", 1),
}
