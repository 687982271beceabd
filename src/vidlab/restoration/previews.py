"""Human-facing outputs of a test run: side-by-side videos and per-frame curves."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

from vidlab.files import atomic_path


def side_by_side(panels: dict[str, np.ndarray], scale: int = 2) -> np.ndarray:
    """Concatenate uint8 clips ``(T, H, W, 3)`` left to right, upscaled, each under its label."""
    columns = []
    for label, frames in panels.items():
        big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        header = np.zeros((frames.shape[0], 18, big.shape[2], 3), np.uint8)
        for t in range(frames.shape[0]):
            cv2.putText(header[t], label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        columns.append(np.concatenate([header, big], axis=1))
        columns.append(np.full((frames.shape[0], columns[-1].shape[1], 2, 3), 80, np.uint8))
    return np.concatenate(columns[:-1], axis=2)


def plot_curves(curves: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """One PNG: per-frame PSNR (top) and flicker (bottom) of each variant."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for variant, values in curves.items():
        top.plot(values["psnr"], label=variant, marker=".")
        bottom.plot([v if math.isfinite(v) else np.nan for v in values["flicker"]], label=variant, marker=".")
    top.set_ylabel("PSNR (dB)")
    bottom.set_ylabel("flicker")
    bottom.set_xlabel("frame")
    top.legend()
    top.set_title("Per-frame PSNR and flicker of the preview clip")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
