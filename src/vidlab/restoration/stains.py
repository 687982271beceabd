"""A stain and how it is drawn and blended: the notebook's circular mask (:func:`circular_stain_mask`,
blended by :func:`apply_stain`, both bit-identical to it), tinted ellipses, and :class:`Stain`, the
layers one clip's frames are blended with. The corruptions (:mod:`.corruption`) draw them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Tint = float | tuple[float, float, float]


def check_fits(height: int, width: int, radius: float) -> None:
    if radius <= 0:
        raise ValueError(f"radius must be > 0 (got {radius})")
    if 2 * radius >= min(height, width):
        raise ValueError(
            f"radius {radius} does not fit a {height}x{width} frame (needs 2*radius < {min(height, width)})"
        )


def _grid(height: int, width: int, origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of a ``height`` x ``width`` region whose top-left is ``origin`` (x, y)."""
    return np.ogrid[origin[1] : origin[1] + height, origin[0] : origin[0] + width]


def circular_stain_mask(
    height: int,
    width: int,
    center: tuple[float, float] | None,
    radius: int,
    opacity: float = 1.0,
    hardness: float = 0.8,
    rng: np.random.Generator | None = None,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The notebook's stain: ``clip(1 - dist / radius, 0, 1) ** hardness * opacity``, float32 (H, W).

    ``center=(cx, cy)`` in pixels; ``None`` draws it as the notebook does so the disc fits:
    ``cx in [radius, width - radius)``, then ``cy in [radius, height - radius)``, from ``rng``.
    ``origin``: the frame pixel ``(x, y)`` of the mask's top-left, to draw a region of a larger frame
    (the same values as the whole frame's mask there: each pixel's formula reads its own coordinates).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1] (got {opacity})")
    if hardness <= 0:
        raise ValueError(f"hardness must be > 0 (got {hardness})")
    if center is None:
        check_fits(height, width, radius)
        rng = rng if rng is not None else np.random.default_rng()
        cx = rng.integers(radius, width - radius)
        cy = rng.integers(radius, height - radius)
    else:
        if radius <= 0:
            raise ValueError(f"radius must be > 0 (got {radius})")
        cx, cy = center
    y, x = _grid(height, width, origin)
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
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Generalised stain: an ellipse with semi-axes ``axes`` rotated by ``angle`` radians (``origin`` as
    in :func:`circular_stain_mask`)."""
    y, x = _grid(height, width, origin)
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
