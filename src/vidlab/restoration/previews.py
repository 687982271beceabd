"""Human-facing outputs of a run: side-by-side videos and stills, per-frame curves, and a validation
still per epoch in MLflow (the run's image view gets a step slider to watch the output evolve)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure

from vidlab.tracking import best_effort


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


def preview_panels(outputs: dict[str, np.ndarray], smoothing: str) -> dict[str, np.ndarray]:
    """The preview's columns, labelled: clean | stained | restored | smoothed (<smoothing>)."""
    return {"clean": outputs["clean"], "stained": outputs["stained"], "restored": outputs["raw"],
            f"smoothed ({smoothing})": outputs["smoothed"]}


class ValidationPreviewImages(Callback):
    """Every ``every_n_epochs`` epochs, the middle frame of the validation preview clip, side by side,
    as the MLflow image ``val/preview`` at ``step=epoch``."""

    def __init__(self, every_n_epochs: int, smoothing: str, scale: int):
        self.every_n_epochs, self.smoothing, self.scale = every_n_epochs, smoothing, scale

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        logger = trainer.logger
        if (trainer.sanity_checking or not isinstance(logger, MLFlowLogger) or not trainer.is_global_zero
                or not pl_module.val_preview):
            return
        if trainer.current_epoch % self.every_n_epochs == 0 or trainer.current_epoch + 1 == trainer.max_epochs:
            image = side_by_side(preview_panels(pl_module.val_preview, self.smoothing), self.scale)[0]
            with best_effort("val/preview image", logger.experiment, logger.run_id):
                logger.experiment.log_image(logger.run_id, image, key="val/preview", step=trainer.current_epoch)


def plot_curves(curves: dict[str, dict[str, list[float]]]) -> Figure:
    """Per-frame PSNR (top) and flicker (bottom) of each variant."""
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
    return fig
