"""What every restoration model is to the rest of vidlab: the schema fields all models share, the
interface the LightningModule, evaluation and restore call (no code outside a model knows its class),
and the registry ``conf/model/<name>.yaml`` choices are found in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from vidlab.registry import Registry
from vidlab.schema import Choice, require


@dataclass
class ModelConfig(Choice):
    """What every restoration model's config has: the stained frames each output frame sees, which the
    data pipeline feeds it (1: the frame alone). A model's own fields live on its schema."""

    context_frames: int

    def __post_init__(self) -> None:
        require(self.context_frames >= 1 and self.context_frames % 2 == 1,
                f"context_frames must be odd and >= 1 (got {self.context_frames})")


MODELS = Registry("model", builtins="vidlab.restoration.models", base=ModelConfig)  # every module there


def neighbour_indices(t: int | np.ndarray, frames: int, length: int) -> np.ndarray:
    """The ``frames`` indices centred on ``t``, clamped to the clip (edges repeat)."""
    offsets = np.arange(frames) - frames // 2
    return np.clip(np.asarray(t)[..., None] + offsets, 0, length - 1)


class TrainingOutput(NamedTuple):
    """What a training step scores: restored frames and their targets ``(N, 3, H, W)``, the stain
    opacity of each ``(N, 1, H, W)`` (the loss weighs pixels inside it), and the model's own losses
    by name (``mask_bce``, ``inverse_l1``: the loss config's ``mask_weight``, ``inverse_weight``)."""

    restored: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor
    losses: dict[str, torch.Tensor]


class RestorationNet(nn.Module, ABC):
    """A restoration model. What restore's tiling asks of it: ``halo``, its receptive-field radius in
    pixels (tiles overlap by it); ``size_multiple``, what a tile's sides are a multiple of;
    ``tileable``, False for a model whose output depends on the whole frame (a norm pooling over it);
    ``context_frames``, the stained frames each output frame reads. ``window``: the frames one stain
    estimate reads (training windows, restore's segments), or None for a model that restores each
    frame from its own neighbours."""

    halo: int
    size_multiple: int = 1
    tileable: bool = True
    context_frames: int = 1
    window: int | None = None

    def segment(self, index: int, length: int) -> tuple[int, int]:
        """For a windowed model, the frames whose stain estimate restores frame ``index`` of a
        ``length``-frame stream: its ``window``-aligned segment, or the last ``window`` frames for a
        short tail."""
        start = index // self.window * self.window
        stop = start + self.window
        return (start, stop) if stop <= length else (max(0, length - self.window), length)

    def check_frame(self, height: int, width: int) -> None:
        """``ValueError`` when frames of this size cannot be restored (any size, unless a model says)."""

    @abstractmethod
    def training_output(self, batch: dict[str, torch.Tensor]) -> TrainingOutput:
        """A training batch (float frames in [0, 1], its ``mask``, and ``centres`` for a windowed model) through the
        model."""

    @abstractmethod
    def restore(self, clip: torch.Tensor, centres: np.ndarray, batch: int, mask: torch.Tensor | None = None,
                stains: dict[tuple[int, int], torch.Tensor] | torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``centres`` of a float clip ``(T, 3, H, W)`` restored, clamped to [0, 1]; ``batch`` at
        once. ``mask``: the true stain, for a model that reads it; ``stains``: what :meth:`find_stains`
        found on the whole frames, or the video's stain (:meth:`find_video_stain`), cropped to this
        clip's pixels (restore's tiles)."""

    def find_stains(self, frames: list[np.ndarray], centres: range, device: torch.device
                    ) -> dict[tuple[int, int], Any] | None:
        """The stain of each segment the ``centres`` of uint8 ``(H, W, 3)`` ``frames`` read, found once on
        whole frames (on ``device``) so that restore's tiles share it (each renders its own pixels with
        ``region(rows, cols)``); None (the default) for a model that finds none."""
        return None

    def find_video_stain(self, runs: np.ndarray, run: int, device: torch.device) -> Any:
        """One stain for a whole video from runs of ``run`` consecutive uint8 frames ``(T, H, W, 3)``
        taken across it (a consensus), or None (the default: the model finds none, or finds it per
        segment). Its ``region(rows, cols)`` (the blend ``(C, h, w)`` on a tile) then restores every
        frame, each from its own neighbours as a per-frame model does, and only inside its ``box()``
        (rows and columns), outside which the frames are their own restoration."""
        return None
