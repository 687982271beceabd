"""Clip metrics for restoration, on float tensors in [0, 1] shaped ``(T, 3, H, W)``.

Inside the stain means ``mask > 0.5``. On Moving-MNIST's black background most stained pixels are
empty and any PSNR there saturates, so ``psnr_content_stain`` also requires clean luma > 0.1: it is
the number that shows restoration. Flicker compares temporal differences to the clean video's, so
lag and ghosting count too. A metric with no pixel to measure is NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STAIN_THRESHOLD = 0.5
CONTENT_LUMA = 0.1
MAX_PSNR = 100.0


def luma(frames: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma ``(T, 1, H, W)``."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=frames.dtype, device=frames.device)
    return (frames * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def psnr(pred: torch.Tensor, target: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """PSNR (data range 1) over the pixels selected by boolean ``where`` (broadcast over channels)."""
    err = (pred - target) ** 2
    if where is not None:
        where = where.expand_as(err)
        if not where.any():
            return math.nan
        err = err[where]
    mse = float(err.mean())
    return MAX_PSNR if mse <= 10 ** (-MAX_PSNR / 10) else -10 * math.log10(mse)


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004; Gaussian window, data range 1, K1=0.01, K2=0.03), differentiable.

    The Gaussian is applied as two 1D passes; second moments are taken about 0.5 (variances do not
    depend on it) to keep float32 cancellation small.
    """
    c1, c2 = 0.01**2, 0.03**2
    channels = pred.shape[1]
    coords = torch.arange(window, dtype=pred.dtype, device=pred.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    rows, cols = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, [window // 2] * 4, mode="replicate")
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    x, y = pred - 0.5, target - 0.5
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    mu_x, mu_y = mu_x + 0.5, mu_y + 0.5
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(ssim_map(pred, target).mean())


def flicker(pred: torch.Tensor, target: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean ``|(out_t - out_{t-1}) - (clean_t - clean_{t-1})|`` over the selected pixels."""
    if pred.shape[0] < 2:
        return math.nan
    err = ((pred[1:] - pred[:-1]) - (target[1:] - target[:-1])).abs()
    if where is not None:
        where = where.expand_as(err)
        if not where.any():
            return math.nan
        err = err[where]
    return float(err.mean())


def clip_metrics(pred: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Every metric of one clip; ``mask`` is the stain opacity ``(1, H, W)`` or ``(1, 1, H, W)``."""
    stain = (mask > STAIN_THRESHOLD).reshape(1, 1, *mask.shape[-2:])
    content = stain & (luma(clean) > CONTENT_LUMA)
    return {
        "psnr": psnr(pred, clean),
        "ssim": ssim(pred, clean),
        "psnr_stain": psnr(pred, clean, stain),
        "psnr_content_stain": psnr(pred, clean, content),
        "flicker": flicker(pred, clean),
        "flicker_stain": flicker(pred, clean, stain),
    }


def per_frame_curves(pred: torch.Tensor, clean: torch.Tensor) -> dict[str, list[float]]:
    """Per-frame PSNR and flicker (flicker of frame 0 is NaN), for plots."""
    t = pred.shape[0]
    return {
        "psnr": [psnr(pred[i], clean[i]) for i in range(t)],
        "flicker": [math.nan] + [flicker(pred[i - 1 : i + 1], clean[i - 1 : i + 1]) for i in range(1, t)],
    }
