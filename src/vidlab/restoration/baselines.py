"""Reference restorations scored beside every trained model, so a test table shows where it stands.

Two are oracles that read the true stain (classical inpainting of the stained pixels, and the exact
inverse of the blend, the ceiling for any method that keeps the uint8 input's information); one is
blind (the clip-minimum estimate, which only holds on black backgrounds). All take and return float
clips ``(T, 3, H, W)`` in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from vidlab.restoration.models.blend import invert_blend

INPAINT_HOLE = 0.05          # pixels with stain opacity above this are the hole OpenCV fills
INPAINT_RADIUS = 3           # OpenCV's neighbourhood radius, in pixels
NOTEBOOK_TINT = 0.3          # the notebook's stain grey, which the clip-minimum estimate assumes


ORACLE_MIN_GAIN = 1e-6       # the exact inverse divides by 1 - m down to this (opaque pixels: content gone)


def _inverse(frames: torch.Tensor, opacity: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return invert_blend(frames, opacity, offset, ORACLE_MIN_GAIN)


def true_inverse(frames: torch.Tensor, opacity: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``(x - b) / (1 - m)`` with the true combined opacity ``m`` ``(1, H, W)`` and offset ``b``
    ``(3, H, W)`` (the blend of a black frame: ``tint * m`` for one stain)."""
    return _inverse(frames, opacity.reshape(1, 1, *opacity.shape[-2:]), offset[None])


def clip_minimum(frames: torch.Tensor) -> torch.Tensor:
    """Blind: opacity = the per-pixel minimum over the clip and channels / 0.3, then the inverse.
    Right only where some frame shows black there, with the notebook's grey tint."""
    opacity = (frames.amin(dim=(0, 1), keepdim=True) / NOTEBOOK_TINT).clamp(0, 1)
    return _inverse(frames, opacity, NOTEBOOK_TINT * opacity)


def inpaint(frames: torch.Tensor, opacity: torch.Tensor, method: str) -> torch.Tensor:
    """OpenCV inpainting (``telea`` or ``ns``) of every frame, the hole being ``opacity > 0.05``."""
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    hole = (opacity.reshape(opacity.shape[-2:]) > INPAINT_HOLE).cpu().numpy().astype(np.uint8) * 255
    images = (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    filled = np.stack([cv2.inpaint(np.ascontiguousarray(image), hole, INPAINT_RADIUS, flag) for image in images])
    return torch.from_numpy(filled).permute(0, 3, 1, 2).to(frames.device).float() / 255


def run_baseline(name: str, frames: torch.Tensor, opacity: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    if name == "true_inverse":
        return true_inverse(frames, opacity, offset)
    if name == "clip_minimum":
        return clip_minimum(frames)
    return inpaint(frames, opacity, name.removeprefix("inpaint_"))
