"""Synthetic stains blended into clips, one class per ``conf/corruption/<name>.yaml``, each registered
with its schema beside it. The restoration notebook's stain is :func:`circular_stain_mask` blended by
:func:`apply_stain`, both bit-identical to it.

A stain is static over a clip: one :class:`Stain` is drawn per clip and applied to all its frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vidlab.registry import Registry
from vidlab.schema import Choice, at_least, check_range, require, within

Tint = float | tuple[float, float, float]


def _check_fits(height: int, width: int, radius: float) -> None:
    if radius <= 0:
        raise ValueError(f"radius must be > 0 (got {radius})")
    if 2 * radius >= min(height, width):
        raise ValueError(
            f"radius {radius} does not fit a {height}x{width} frame (needs 2*radius < {min(height, width)})"
        )


def circular_stain_mask(
    height: int,
    width: int,
    center: tuple[float, float] | None,
    radius: int,
    opacity: float = 1.0,
    hardness: float = 0.8,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The notebook's stain: ``clip(1 - dist / radius, 0, 1) ** hardness * opacity``, float32 (H, W).

    ``center=(cx, cy)`` in pixels; ``None`` draws it as the notebook does so the disc fits:
    ``cx in [radius, width - radius)``, then ``cy in [radius, height - radius)``, from ``rng``.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1] (got {opacity})")
    if hardness <= 0:
        raise ValueError(f"hardness must be > 0 (got {hardness})")
    if center is None:
        _check_fits(height, width, radius)
        rng = rng if rng is not None else np.random.default_rng()
        cx = rng.integers(radius, width - radius)
        cy = rng.integers(radius, height - radius)
    else:
        if radius <= 0:
            raise ValueError(f"radius must be > 0 (got {radius})")
        cx, cy = center
    y, x = np.ogrid[:height, :width]
    dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    mask = np.clip(1 - dist / radius, 0, 1) ** hardness * opacity
    return mask.astype(np.float32)


def elliptical_stain_mask(
    height: int,
    width: int,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    opacity: float,
    hardness: float,
) -> np.ndarray:
    """Generalised stain: an ellipse with semi-axes ``axes`` rotated by ``angle`` radians."""
    y, x = np.ogrid[:height, :width]
    dx, dy = x - center[0], y - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / axes[0]
    v = (-dx * sin + dy * cos) / axes[1]
    mask = np.clip(1 - np.sqrt(u**2 + v**2), 0, 1) ** hardness * opacity
    return mask.astype(np.float32)


def _blend(frames01: np.ndarray, mask: np.ndarray, tint: Tint) -> np.ndarray:
    # Same operation order as the notebook, so the uint8 result is bit-identical.
    m = mask.astype(np.float64)[..., None]
    tint_arr = np.asarray(tint, dtype=np.float64)
    return np.clip(frames01 * (1 - m) + tint_arr * m, 0, 1)


def apply_stain(frames: np.ndarray, mask: np.ndarray, tint: Tint = 0.3) -> np.ndarray:
    """Blend ``mask`` (H, W) into uint8 RGB ``frames`` (T, H, W, 3) towards ``tint``; uint8 out."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return (_blend(frames / 255.0, mask, tint) * 255).astype(np.uint8)


@dataclass(frozen=True)
class StainLayer:
    mask: np.ndarray
    tint: Tint


@dataclass(frozen=True)
class Stain:
    """The stain of one clip: layers applied in order, and their combined opacity for metrics."""

    layers: tuple[StainLayer, ...]
    height: int
    width: int

    @property
    def mask(self) -> np.ndarray:
        clear = np.ones((self.height, self.width), dtype=np.float32)
        for layer in self.layers:
            clear *= 1 - layer.mask
        return 1 - clear

    @property
    def offset(self) -> np.ndarray:
        """What the stain adds to every frame, float32 ``(H, W, 3)``: the blend of a black frame, so that
        ``stained = clean * (1 - mask) + offset`` before rounding (``tint * mask`` for one stain)."""
        out = np.zeros((self.height, self.width, 3))
        for layer in self.layers:
            out = _blend(out, layer.mask, layer.tint)
        return out.astype(np.float32)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        if not self.layers:
            return frames.copy()
        if len(self.layers) == 1:
            return apply_stain(frames, self.layers[0].mask, self.layers[0].tint)
        out = frames / 255.0
        for layer in self.layers:
            out = _blend(out, layer.mask, layer.tint)
        return (out * 255).astype(np.uint8)


class Corruption(ABC):
    """What a corruption does: check that it fits a frame size, and draw one clip's stain."""

    stains = True  # False for the identity: a stain metric then has no pixel to score

    @abstractmethod
    def check_frame(self, height: int, width: int) -> None:
        """``ValueError`` when the corruption cannot be drawn on a ``height`` x ``width`` frame."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, height: int, width: int) -> Stain:
        """The stain of one clip, drawn from ``rng``."""


CORRUPTIONS = Registry("corruption")


@dataclass
class CircularStainConfig(Choice):
    radius: int
    opacity: float
    hardness: float
    tint: float
    colour: Optional[list[float]]

    def __post_init__(self) -> None:
        within(0, 1, self, "opacity", "tint")
        require(self.hardness > 0, f"hardness must be > 0 (got {self.hardness})")
        at_least(1, self, "radius")
        require(self.colour is None or (len(self.colour) == 3 and all(0 <= c <= 1 for c in self.colour)),
                f"colour must be null or [r, g, b] in [0, 1] (got {self.colour})")


@CORRUPTIONS.register("circular_stain", CircularStainConfig)
class CircularStain(Corruption):
    """The notebook's corruption: one grey disc per clip at a random centre (or a coloured one)."""

    def __init__(self, radius: int, opacity: float, hardness: float, tint: float, colour: list[float] | None = None):
        self.radius, self.opacity, self.hardness = radius, opacity, hardness
        self.tint: Tint = tint if colour is None else tuple(float(c) for c in colour)

    def check_frame(self, height: int, width: int) -> None:
        _check_fits(height, width, self.radius)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> Stain:
        mask = circular_stain_mask(
            height, width, None, self.radius, self.opacity, self.hardness, rng=rng
        )
        return Stain((StainLayer(mask, self.tint),), height, width)


@dataclass
class MultiStainConfig(Choice):
    min_stains: int
    max_stains: int
    radius_range: list[float]
    opacity_range: list[float]
    hardness_range: list[float]
    tint_range: list[float]
    aspect_range: list[float]

    def __post_init__(self) -> None:
        require(1 <= self.min_stains <= self.max_stains,
                f"need 1 <= min_stains <= max_stains (got {self.min_stains}, {self.max_stains})")
        check_range("radius_range", self.radius_range, 1.0)
        check_range("opacity_range", self.opacity_range, 0.0, 1.0)
        check_range("hardness_range", self.hardness_range, 1e-6)
        check_range("tint_range", self.tint_range, 0.0, 1.0)
        check_range("aspect_range", self.aspect_range, 0.05, 1.0)


@CORRUPTIONS.register("multi_stain", MultiStainConfig)
class MultiStain(Corruption):
    """Several stains per clip with random size, shape, opacity, hardness and tint colour."""
    def __init__(
        self,
        min_stains: int,
        max_stains: int,
        radius_range: tuple[float, float],
        opacity_range: tuple[float, float],
        hardness_range: tuple[float, float],
        tint_range: tuple[float, float],
        aspect_range: tuple[float, float],
    ):
        self.count = (min_stains, max_stains)
        self.radius_range, self.opacity_range = radius_range, opacity_range
        self.hardness_range, self.tint_range, self.aspect_range = hardness_range, tint_range, aspect_range

    def check_frame(self, height: int, width: int) -> None:
        _check_fits(height, width, self.radius_range[1])

    def sample(self, rng: np.random.Generator, height: int, width: int) -> Stain:
        layers = []
        for _ in range(rng.integers(self.count[0], self.count[1] + 1)):
            radius = rng.uniform(*self.radius_range)
            axes = (radius, radius * rng.uniform(*self.aspect_range))
            center = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
            mask = elliptical_stain_mask(
                height,
                width,
                center,
                axes,
                angle=rng.uniform(0, np.pi),
                opacity=rng.uniform(*self.opacity_range),
                hardness=rng.uniform(*self.hardness_range),
            )
            tint = tuple(float(t) for t in rng.uniform(*self.tint_range, size=3))
            layers.append(StainLayer(mask, tint))
        return Stain(tuple(layers), height, width)


@dataclass
class NoCorruptionConfig(Choice):
    """No parameters."""


@CORRUPTIONS.register("none", NoCorruptionConfig)
class NoStain(Corruption):
    """Identity corruption: the clean clip, an all-zero mask."""

    stains = False

    def check_frame(self, height: int, width: int) -> None:
        return None

    def sample(self, rng: np.random.Generator, height: int, width: int) -> Stain:
        return Stain((), height, width)
