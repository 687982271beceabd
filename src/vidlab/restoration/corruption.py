"""Synthetic stains blended into clips, one class per ``conf/corruption/<name>.yaml``, each registered
with its schema beside it. What they draw, and how it is blended, is :mod:`.stains` (the notebook's
stain bit for bit).

A stain is static over a clip: one :class:`Stain` is drawn per clip and applied to all its frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vidlab.registry import Registry
from vidlab.restoration.stains import Stain, StainLayer, Tint, check_fits, circular_stain_mask, elliptical_stain_mask
from vidlab.schema import Choice, at_least, check_range, require, within


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
        check_fits(height, width, self.radius)

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
        check_fits(height, width, self.radius_range[1])

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
