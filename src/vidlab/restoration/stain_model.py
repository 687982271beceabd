"""The stain model: an elliptical stain's shape, its ten free parameters, its blend rendered on a
region, and what an estimate found (:mod:`.stain_estimate` finds it).

Every stain blends each frame the same way, ``x_t = f_t * a + o`` per pixel, with gain ``a = 1 - m``
(``m`` the opacity) and an offset ``o`` per colour channel (``tint * m`` for one stain; layered stains
compose to the same form), and it is static while the content moves: a clip's frames are the many
images a fixed overlay sits on, as in Dekel et al., "On the Effectiveness of Visible Watermarks"
(CVPR 2017). The restored frames ``f_t = (x_t - o) / a`` should then look like footage, and a wrong
stain leaves a static residue in every frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vidlab.restoration import stains


@dataclass(frozen=True)
class StainShape:
    """One elliptical stain: ``m = opacity * clip(1 - r, 0, 1) ** hardness`` with ``r`` the pixel's
    elliptical distance from ``centre`` (semi-axes ``axes``, rotated by ``angle`` radians), blended
    towards ``tint`` (RGB in [0, 1]). The notebook's disc is the round case."""

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    hardness: float
    opacity: float
    tint: tuple[float, float, float]

    def mask(self, height: int, width: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Its opacity on a ``height`` x ``width`` region whose top-left is the frame's pixel ``origin``."""
        if self.axes[0] == self.axes[1] and self.angle == 0:
            return stains.circular_stain_mask(height, width, self.centre, self.axes[0], self.opacity, self.hardness,
                                              origin=origin)
        return stains.elliptical_stain_mask(height, width, self.centre, self.axes, self.angle, self.opacity,
                                            self.hardness, origin)

    def scaled(self, factor: float) -> StainShape:
        return StainShape((self.centre[0] * factor, self.centre[1] * factor),
                          (self.axes[0] * factor, self.axes[1] * factor), self.angle, self.hardness, self.opacity,
                          self.tint)


@dataclass(frozen=True)
class StainEstimate:
    """What was found in a clip: its layers (none for a clean clip), the hypothesis that won, and each
    hypothesis' negative log-likelihood per frame (lower is better) with its parameter count."""

    layers: tuple[StainShape, ...]
    hypothesis: str
    evidence: dict[str, tuple[float, int]] = field(default_factory=dict)

    def blend(self, height: int, width: int, device: torch.device | str = "cpu",
              region: tuple[slice, slice] = (slice(None), slice(None))) -> tuple[torch.Tensor, torch.Tensor]:
        """Opacity ``(H, W)`` and offset ``(3, H, W)`` at a frame size (float32), by the corruptions'
        own formulas: the notebook's disc is its mask bit for bit. ``region``: rows and columns of the
        frame to render alone, with the whole frame's values there (a 4K frame's blend is 0.13 GB, and
        its float64 rendering 0.9 GB at its peak)."""
        (top, bottom, _), (left, right, _) = region[0].indices(height), region[1].indices(width)
        stain = self._stain(bottom - top, right - left, (left, top))
        return torch.from_numpy(stain.mask).to(device), torch.from_numpy(stain.offset).permute(2, 0, 1).to(device)

    def _strips(self, height: int, width: int, pixels: int = 1 << 20) -> Iterator[tuple[int, stains.Stain]]:
        """``(top, layers drawn there)`` of full-width strips of about ``pixels`` pixels covering the frame:
        what the whole frame holds, in memory that does not grow with it."""
        rows = max(1, pixels // width)
        for top in range(0, height, rows):
            yield top, self._stain(min(rows, height - top), width, (0, top))

    def _stain(self, height: int, width: int, origin: tuple[int, int]) -> stains.Stain:
        """The layers drawn on a region whose top-left is the frame's pixel ``origin``."""
        return stains.Stain(tuple(stains.StainLayer(shape.mask(height, width, origin), shape.tint)
                                  for shape in self.layers), height, width)

    def box(self, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns holding every pixel a layer covers (its opacity above 0; empty slices
        for none): outside them the stain blends nothing, and the frame is its own restoration."""
        rows, cols = np.zeros(height, bool), np.zeros(width, bool)
        for top, stain in self._strips(height, width):
            covered = np.zeros((stain.height, width), bool)
            for layer in stain.layers:
                covered |= layer.mask > 0
            rows[top : top + stain.height] = covered.any(1)
            cols |= covered.any(0)
        if not rows.any():
            return slice(0, 0), slice(0, 0)
        (r,), (c,) = rows.nonzero(), cols.nonzero()
        return slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)

    def summary(self, height: int, width: int) -> dict:
        """The report ``python -m vidlab.restore`` logs: stains, area (pixels with opacity above 0.05),
        mean opacity over that area, the hypothesis and the layers."""
        area, total = 0, 0.0
        for _, stain in self._strips(height, width):
            opacity = stain.mask
            inside = opacity[opacity > 0.05]
            area, total = area + inside.size, total + float(inside.sum(dtype=np.float64))
        return {"stains": len(self.layers), "hypothesis": self.hypothesis, "area_pixels": area,
                "area_fraction": round(area / (height * width), 5),
                "mean_opacity": round(total / area, 4) if area else 0.0,
                "layers": [asdict(layer) for layer in self.layers],
                "evidence": {name: {"log_likelihood_gain": round(gain, 1), "parameters": k}
                             for name, (gain, k) in self.evidence.items()}}


def layer_parameters(layers: tuple[StainShape, ...] | list[StainShape]) -> torch.Tensor:
    """``(K, 10)`` free parameters: centre x, y; log semi-axes; angle; log hardness; logit opacity;
    logit tint (3)."""
    def logit(p: float) -> float:
        p = min(max(p, 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p))

    return torch.tensor([[*layer.centre, math.log(layer.axes[0]), math.log(layer.axes[1]), layer.angle,
                          math.log(layer.hardness), logit(layer.opacity), *map(logit, layer.tint)] for layer in layers],
                        dtype=torch.float32)


def as_layers(params: torch.Tensor) -> tuple[StainShape, ...]:
    p = params.detach().cpu().double()
    return tuple(StainShape((float(q[0]), float(q[1])), (float(q[2].exp()), float(q[3].exp())), float(q[4]) % math.pi,
                            float(q[5].exp()), float(q[6].sigmoid()), tuple(float(t) for t in q[7:10].sigmoid()))
                 for q in p)


def render(params: torch.Tensor, height: int, width: int,
           origin: tuple[int, int] = (0, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain ``1 - m`` ``(H, W)`` and offset ``(3, H, W)`` of layers ``(K, 10)`` blended in order, on a
    ``height`` x ``width`` region whose top-left pixel is ``origin`` (x, y) of the frame."""
    device = params.device
    ys = torch.arange(origin[1], origin[1] + height, device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(origin[0], origin[0] + width, device=device, dtype=torch.float32)[None]
    gain = torch.ones(height, width, device=device)
    offset = torch.zeros(3, height, width, device=device)
    for p in params:
        dx, dy = xs - p[0], ys - p[1]
        cos, sin = torch.cos(p[4]), torch.sin(p[4])
        u, v = (dx * cos + dy * sin) / p[2].exp(), (dy * cos - dx * sin) / p[3].exp()
        inside = (1 - torch.sqrt(u * u + v * v + 1e-12)).clamp(min=0)
        mask = torch.sigmoid(p[6]) * torch.where(inside > 0, inside.clamp(min=1e-6) ** p[5].exp(),
                                                 torch.zeros_like(inside))
        offset = offset * (1 - mask) + torch.sigmoid(p[7:10])[:, None, None] * mask
        gain = gain * (1 - mask)
    return gain, offset
