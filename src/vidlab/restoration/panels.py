"""Clips side by side, each under its label: run previews, and restore's ``--side-by-side`` video.
A module of its own so that restore writes one without importing what logs a run (MLflow,
matplotlib: seconds, and memory that restoring does not need)."""

from __future__ import annotations

import cv2
import numpy as np


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
    video = np.concatenate(columns[:-1], axis=2)
    # even sides: H.264 in 4:2:0, the only chroma layout browsers play, needs them
    return np.pad(video, ((0, 0), (0, video.shape[1] % 2), (0, video.shape[2] % 2), (0, 0)))
