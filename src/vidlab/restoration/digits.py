"""Moving-MNIST-style videos made offline: bouncing digit glyphs, deterministic by seed.

Glyphs are drawn with OpenCV's Hershey fonts under a random affine distortion, or taken from real
MNIST IDX files (``mnist_path``); nothing is downloaded.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np

from vidlab.errors import InputError, one_line

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)


def draw_glyph(rng: np.random.Generator, size: int) -> np.ndarray:
    """A handwritten-looking digit, float32 (size, size) in [0, 1], white on black."""
    canvas = np.zeros((64, 64), np.uint8)
    digit = str(rng.integers(0, 10))
    cv2.putText(
        canvas, digit, (14, 50), _FONTS[rng.integers(len(_FONTS))], 1.6, 255,
        int(rng.integers(3, 6)), cv2.LINE_AA,
    )
    angle = rng.uniform(-20, 20)
    scale = rng.uniform(0.85, 1.1)
    affine = cv2.getRotationMatrix2D((32, 32), angle, scale)
    affine[0, 1] += rng.uniform(-0.3, 0.3)
    canvas = cv2.warpAffine(canvas, affine, (64, 64), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(canvas > 20)
    crop = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    # MNIST convention: the digit fits a 20/28 box centred in the glyph.
    inner = max(1, round(size * 20 / 28))
    h, w = crop.shape
    factor = inner / max(h, w)
    crop = cv2.resize(crop, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    glyph = np.zeros((size, size), np.float32)
    y0, x0 = (size - crop.shape[0]) // 2, (size - crop.shape[1]) // 2
    glyph[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop / 255.0
    return glyph


def load_mnist_idx(path: str | Path) -> np.ndarray:
    """Images from an MNIST IDX file (``*-images-idx3-ubyte``, optionally gzipped), uint8 (N, 28, 28);
    anything else is one :class:`InputError` naming ``dataset.mnist_path``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as err:  # missing, unreadable, or not gzip despite its name
        raise InputError(f"dataset.mnist_path: cannot read {path}: {err.strerror or one_line(err)}") from None
    magic = int.from_bytes(data[:4], "big")
    n, rows, cols = (int.from_bytes(data[4 * i : 4 * i + 4], "big") for i in range(1, 4))
    if magic != 2051 or len(data) != 16 + n * rows * cols or not n:
        raise InputError(f"dataset.mnist_path: {path} is not an MNIST IDX image file (*-images-idx3-ubyte[.gz]: "
                         f"magic 2051, then count, rows, columns and the pixels)")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)


class MovingDigits:
    """Renders one video per (seed, split, index): 1..N digits bouncing off the frame borders."""

    def __init__(
        self,
        height: int,
        width: int,
        frames: int,
        min_digits: int,
        max_digits: int,
        digit_size: int,
        speed_range: tuple[float, float],
        mnist_images: np.ndarray | None = None,
    ):
        self.height, self.width, self.frames = height, width, frames
        self.digits = (min_digits, max_digits)
        self.digit_size, self.speed_range = digit_size, speed_range
        self.mnist_images = mnist_images

    def _glyph(self, rng: np.random.Generator) -> np.ndarray:
        if self.mnist_images is None:
            return draw_glyph(rng, self.digit_size)
        image = self.mnist_images[rng.integers(len(self.mnist_images))]
        return cv2.resize(image, (self.digit_size, self.digit_size), interpolation=cv2.INTER_LINEAR) / 255.0

    def render(self, rng: np.random.Generator) -> np.ndarray:
        """uint8 RGB (T, H, W, 3); overlapping digits combine by maximum, as in Moving MNIST."""
        s = self.digit_size
        video = np.zeros((self.frames, self.height, self.width), np.float32)
        for _ in range(rng.integers(self.digits[0], self.digits[1] + 1)):
            glyph = self._glyph(rng)
            pos = np.array([rng.uniform(0, self.width - s), rng.uniform(0, self.height - s)])
            angle = rng.uniform(0, 2 * np.pi)
            vel = rng.uniform(*self.speed_range) * np.array([np.cos(angle), np.sin(angle)])
            limit = np.array([self.width - s, self.height - s], dtype=np.float64)
            for t in range(self.frames):
                x, y = int(round(pos[0])), int(round(pos[1]))
                np.maximum(video[t, y : y + s, x : x + s], glyph, out=video[t, y : y + s, x : x + s])
                pos += vel
                for axis in (0, 1):
                    if pos[axis] < 0 or pos[axis] > limit[axis]:
                        vel[axis] = -vel[axis]
                        pos[axis] = np.clip(pos[axis], 0, limit[axis])
        gray = (video * 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
