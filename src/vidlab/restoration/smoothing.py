"""Temporal post-steps on a restored clip ``(T, C, H, W)`` in [0, 1], applied in time order.

``masked`` exists because plain smoothing of moving content lags and ghosts: it only touches pixels
the restoration changed, and weighs neighbours by how close their values are (a temporal bilateral
filter), so a digit passing through the stain is not blended into the background.
"""

from __future__ import annotations

import torch

from vidlab.restoration.config import EmaSmoothingConfig, MaskedSmoothingConfig, NoSmoothingConfig, WindowSmoothingConfig
from vidlab.schema import instantiate_choice


def _time_kernel(frames: int, kernel: str, sigma: float) -> torch.Tensor:
    offsets = torch.arange(frames, dtype=torch.float32) - frames // 2
    if kernel == "box":
        return torch.ones(frames) / frames
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def _neighbours(clip: torch.Tensor, frames: int) -> torch.Tensor:
    """``(frames, T, C, H, W)``: the clip shifted by each centred offset, edges repeated."""
    t = clip.shape[0]
    idx = (torch.arange(t)[None] + torch.arange(frames)[:, None] - frames // 2).clamp(0, t - 1)
    return clip[idx.to(clip.device)]


class NoSmoothing:
    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        return restored


class EmaSmoothing:
    """``y_t = alpha * x_t + (1 - alpha) * y_{t-1}``: causal, so moving content lags."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(restored)
        out[0] = restored[0]
        for t in range(1, restored.shape[0]):
            out[t] = self.alpha * restored[t] + (1 - self.alpha) * out[t - 1]
        return out


class WindowSmoothing:
    """Centred box or Gaussian average over ``window`` frames (no lag; edges repeat)."""

    def __init__(self, window: int, kernel: str, sigma: float):
        self.window, self.weights = window, _time_kernel(window, kernel, sigma)

    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(restored)
        return torch.einsum("k,ktchw->tchw", w, _neighbours(restored, self.window))


class MaskedSmoothing:
    """Edge-preserving temporal smoothing gated by how much the restoration changed the input.

    Gate: 0 where ``max_c |restored - stained| <= change_threshold`` (pixel left exactly as restored),
    ramping to 1 at twice the threshold. Neighbour weight: Gaussian in time times
    ``exp(-d^2 / (2 value_sigma^2))`` with ``d`` the neighbour's value difference to the centre pixel.
    """

    def __init__(self, window: int, sigma: float, value_sigma: float, change_threshold: float):
        self.window, self.time_weights = window, _time_kernel(window, "gaussian", sigma)
        self.value_sigma, self.threshold = value_sigma, change_threshold

    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        neighbours = _neighbours(restored, self.window)
        diff = (neighbours - restored[None]).abs().amax(dim=2, keepdim=True)
        weights = self.time_weights.to(restored).view(-1, 1, 1, 1, 1) * torch.exp(-(diff**2) / (2 * self.value_sigma**2))
        smoothed = (weights * neighbours).sum(0) / weights.sum(0)
        change = (restored - stained).abs().amax(dim=1, keepdim=True)
        if self.threshold > 0:
            gate = ((change - self.threshold) / self.threshold).clamp(0, 1)
        else:
            gate = torch.ones_like(change)
        return restored + gate * (smoothed - restored)


Smoother = NoSmoothing | EmaSmoothing | WindowSmoothing | MaskedSmoothing


def build_smoothing(
    cfg: NoSmoothingConfig | EmaSmoothingConfig | WindowSmoothingConfig | MaskedSmoothingConfig,
) -> Smoother:
    return instantiate_choice(cfg)
