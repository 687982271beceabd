"""Shared fixtures: real video files written with OpenCV, composed real configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
