"""Temporal post-steps on a restored clip ``(T, C, H, W)`` in [0, 1], applied in time order.

``masked`` exists because plain smoothing of moving content lags and ghosts: it only touches pixels
the restoration changed, and weighs neighbours by how close their values are (a temporal bilateral
filter), so a digit passing through the stain is not blended into the background.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from vidlab.registry import Registry
from vidlab.schema import Choice, one_of, require

SMOOTHINGS = Registry("smoothing")


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


class Smoother(ABC):
    """A temporal post-step: the restored clip and the stained input in, the smoothed clip out."""

    @abstractmethod
    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        """The smoothed clip: a new tensor, or ``restored`` itself; the inputs are read, never written
        (restore hands the same strip as both where nothing was restored)."""

    @abstractmethod
    def context(self) -> tuple[int, int, bool]:
        """Frames read before and after each frame, and whether the ones before are its own outputs
        (recursive): what a streamed block must carry to be smoothed as in the whole video."""


@dataclass
class NoSmoothingConfig(Choice):
    """No parameters."""


@SMOOTHINGS.register("none", NoSmoothingConfig)
class NoSmoothing(Smoother):
    """The restored frames as they are."""

    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        return restored

    def context(self) -> tuple[int, int, bool]:
        return 0, 0, False


@dataclass
class EmaSmoothingConfig(Choice):
    alpha: float

    def __post_init__(self) -> None:
        require(0 < self.alpha <= 1, f"alpha must be in (0, 1] (got {self.alpha})")


@SMOOTHINGS.register("ema", EmaSmoothingConfig)
class EmaSmoothing(Smoother):
    """``y_t = alpha * x_t + (1 - alpha) * y_{t-1}``: causal, so moving content lags."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def context(self) -> tuple[int, int, bool]:
        return 1, 0, True

    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(restored)
        out[0] = restored[0]
        for t in range(1, restored.shape[0]):
            out[t] = self.alpha * restored[t] + (1 - self.alpha) * out[t - 1]
        return out


@dataclass
class TimeWindowConfig(Choice):
    """What the centred smoothings share: an odd window of frames, a Gaussian width in frames."""

    window: int
    sigma: float

    def __post_init__(self) -> None:
        require(self.window >= 1 and self.window % 2 == 1, f"window must be odd and >= 1 (got {self.window})")
        require(self.sigma > 0, f"sigma must be > 0 (got {self.sigma})")


class CentredSmoother(Smoother):
    """A smoothing over ``window`` frames centred on each frame."""

    window: int

    def context(self) -> tuple[int, int, bool]:
        return self.window // 2, self.window // 2, False


@dataclass
class WindowSmoothingConfig(TimeWindowConfig):
    kernel: str

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self, "kernel", "box", "gaussian")


@SMOOTHINGS.register("window", WindowSmoothingConfig)
class WindowSmoothing(CentredSmoother):
    """Centred box or Gaussian average over ``window`` frames (no lag; edges repeat)."""

    def __init__(self, window: int, kernel: str, sigma: float):
        self.window, self.weights = window, _time_kernel(window, kernel, sigma)

    def __call__(self, restored: torch.Tensor, stained: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(restored)
        return torch.einsum("k,ktchw->tchw", w, _neighbours(restored, self.window))


@dataclass
class MaskedSmoothingConfig(TimeWindowConfig):
    value_sigma: float
    change_threshold: float

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.value_sigma > 0, f"value_sigma must be > 0 (got {self.value_sigma})")
        require(0 <= self.change_threshold < 1, f"change_threshold must be in [0, 1) (got {self.change_threshold})")


@SMOOTHINGS.register("masked", MaskedSmoothingConfig)
class MaskedSmoothing(CentredSmoother):
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
        weights = (self.time_weights.to(restored).view(-1, 1, 1, 1, 1)
                   * torch.exp(-(diff**2) / (2 * self.value_sigma**2)))
        smoothed = (weights * neighbours).sum(0) / weights.sum(0)
        change = (restored - stained).abs().amax(dim=1, keepdim=True)
        if self.threshold > 0:
            gate = ((change - self.threshold) / self.threshold).clamp(0, 1)
        else:
            gate = torch.ones_like(change)
        return restored + gate * (smoothed - restored)
