"""Human-facing outputs of a run: side-by-side videos and stills, per-frame curves, and a validation
still per epoch in MLflow (the run's image view gets a step slider to watch the output evolve)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure

from vidlab.restoration.panels import side_by_side
from vidlab.tracking import best_effort


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
