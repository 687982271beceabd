"""Finding a clip's stain when its shape is known: search the centre that makes the inverse blend
look like a natural image.

The notebook's stain is one disc of a known profile (radius, hardness, opacity, tint) at an unknown
centre, static over the clip. For each candidate centre the frames are put through the exact inverse
``(x - tint * m) / (1 - m)``; a wrong centre leaves a disc-shaped residue (a grey spot where the
candidate's opacity is too low, blown-up contrast where it is too high), the right one leaves the
footage. The score is the negative log-likelihood of the inverse's image gradients under a heavy-tailed
prior, ``log(1 + |g| / sigma)`` summed over the candidate's disc (the sparse-gradient statistics of
natural images, Levin et al. 2007), minus the same for the stained frames so that every candidate is
scored on the pixels it changes. Unlike a learned estimator, it does not depend on what footage it
was trained on, and on real videos it comes within about a dB of the true stain where the learned
per-pixel estimate does not (docs/restoration.md). A plain total-variation score prefers candidates
that lower the contrast and misses by several pixels: the heavy tail is what makes it work.

Candidates are integer centres whose disc fits the frame, as the notebook draws them: a coarse grid
on a few frames' channel means first, then every centre around the best coarse ones on all frames.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vidlab.restoration.stains import circular_stain_mask

COARSE_STEP = 4        # pixels between coarse candidates: narrower than the score's basin (measured)
COARSE_FRAMES = 4      # frames the coarse grid reads
FINALISTS = 3          # coarse candidates searched around, pixel by pixel, on every frame
FLOOR = 0.02           # 1 - m is floored here in the search (the disc's centre is opaque)
SEARCH_ROWS = 72       # a larger frame is searched shrunk to about this many rows first
MIN_RADIUS = 8         # ... unless that would shrink the stain below this radius
VALUES_AT_ONCE = 1 << 22  # frame values made float at once on native frames (16 MB of each temporary)


def _template(radius: float, hardness: float, opacity: float,
              tint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Gain ``1 / (1 - m)`` and offset ``tint * m / (1 - m)`` of a disc centred in a ``(2R+1)^2`` square."""
    reach = math.ceil(radius)
    size = 2 * reach + 1
    mask = torch.from_numpy(circular_stain_mask(size, size, (reach, reach), radius, opacity, hardness))
    gain = 1 / (1 - mask).clamp(min=FLOOR)
    return gain, tint.reshape(-1, 1, 1) * mask * gain, reach


def _log_gradients(x: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """``log(1 + |g| / sigma)`` of the differences along ``axis`` (-1: horizontal, -2: vertical), one
    axis at a time: on a native clip each is as large as the clip."""
    return torch.diff(x, dim=axis).abs_().div_(sigma).log1p_()


def _box_sums(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Sums of ``image`` over every ``rows x cols`` window, indexed by the window's top-left corner."""
    table = torch.nn.functional.pad(image.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    return table[rows:, cols:] - table[:-rows, cols:] - table[rows:, :-cols] + table[:-rows, :-cols]


class _Scorer:
    """Scores centres on a clip: the inverse's gradient likelihood over the candidate's square minus
    the stained frames' (the latter from box sums of per-pixel images, computed once)."""

    def __init__(self, clip: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, reach: int, sigma: float):
        self.clip, self.gain, self.offset, self.reach, self.sigma = clip, gain, offset, reach, sigma
        size = 2 * reach + 1
        gx, gy = _log_gradients(clip, sigma, -1).sum((0, 1)), _log_gradients(clip, sigma, -2).sum((0, 1))
        self.stained = _box_sums(gx, size, size - 1) + _box_sums(gy, size - 1, size)  # (H - size + 1, W - size + 1)

    def __call__(self, xs: range, y: int) -> torch.Tensor:
        """Scores of the centres ``(x, y)`` for ``x`` in ``xs`` (a range with a step), lower is better."""
        reach, size = self.reach, 2 * self.reach + 1
        strip = self.clip[:, :, y - reach : y + reach + 1, xs.start - reach : xs.stop - 1 + reach + 1]
        crops = strip.unfold(-1, size, xs.step).permute(3, 0, 1, 2, 4)  # (candidates, T, 3, size, size)
        corners = torch.tensor(list(xs)) - reach
        inverse = crops * self.gain - self.offset
        inverse = sum(_log_gradients(inverse, self.sigma, axis).sum((-4, -3, -2, -1)) for axis in (-1, -2))
        return inverse - self.stained[y - reach, corners].float()


def _scale(height: int, width: int, radius: float) -> int:
    """How much a frame can shrink for the first search: to about the project's 72 rows, but not below
    a stain of 8 pixels of radius, whose profile the shrunk frame would blur away."""
    return max(1, min(min(height, width) // SEARCH_ROWS, int(radius // MIN_RADIUS)))


def _best(scorer: _Scorer, xs: range, ys: range) -> list[tuple[float, int, int]]:
    """``(score, x, y)`` of every centre on the grid ``xs`` x ``ys``."""
    return [(float(s), x, y) for y in ys for s, x in zip(scorer(xs, y), xs)]


def as_float(frames: torch.Tensor) -> torch.Tensor:
    """Frames as float32 in [0, 1] (uint8 ones divided by 255)."""
    return frames.float().div_(255) if frames.dtype == torch.uint8 else frames.float()


def shrink(frames: torch.Tensor | list[torch.Tensor], scale: int) -> torch.Tensor:
    """Frames ``(T, C, H, W)`` (or a list of ``(C, H, W)``) as floats (:func:`as_float`) shrunk by
    ``scale`` (block means) into one ``(T, C, h, w)`` tensor, a strip of rows of one frame at a time (a
    multiple of ``scale`` rows: the same blocks): a native frame is never made float whole (at 4K, 0.1 GB)."""
    if scale == 1:
        return as_float(frames if isinstance(frames, torch.Tensor) else torch.stack(frames))
    c, h, w = frames[0].shape
    out = torch.empty(len(frames), c, h // scale, w // scale, device=frames[0].device)
    rows = max(1, VALUES_AT_ONCE // (c * w * scale)) * scale
    for index, frame in enumerate(frames):
        for top in range(0, h // scale * scale, rows):
            out[index, :, top // scale : (top + rows) // scale] = torch.nn.functional.avg_pool2d(
                as_float(frame[:, top : top + rows]), scale)
    return out


def fit_centre(clip: torch.Tensor, radius: float, hardness: float, opacity: float,
               tint: torch.Tensor) -> tuple[int, int]:
    """The centre ``(x, y)`` of the disc stain in a clip ``(T, 3, H, W)``, uint8 or float in [0, 1]. A
    large frame is searched shrunk first (block means), then around that centre at full size, where
    only the pixels those candidates read are made float (restore hands over whole uint8 frames)."""
    t, _, h, w = clip.shape
    gain, offset, reach = _template(radius, hardness, opacity, tint.to(device=clip.device, dtype=torch.float32))
    if h < 2 * reach + 1 or w < 2 * reach + 1:
        raise ValueError(f"a {h}x{w} frame cannot hold a stain of radius {radius}")
    scale = _scale(h, w, radius)
    if scale > 1:
        x, y = fit_centre(shrink(clip, scale), radius / scale, hardness, opacity, tint)
        x, y, spread = x * scale + (scale - 1) // 2, y * scale + (scale - 1) // 2, scale + 2
        top, left = max(0, y - spread - reach), max(0, x - spread - reach)
        region = as_float(clip[..., top : y + spread + reach + 1, left : x + spread + reach + 1])
        finalists = [(0.0, x - left, y - top)]
    else:
        region, top, left, spread = as_float(clip), 0, 0, COARSE_STEP
    bounds = (reach - left, w - reach - left, reach - top, h - reach - top)  # candidates whose disc fits the frame
    sigma = max(float(torch.diff(region).abs_().mean()), 1e-3)  # the footage's gradient scale
    fine = _Scorer(region, gain, offset, reach, sigma)
    if scale == 1:  # the coarse grid reads a few frames' channel means (the blend holds for them with the mean tint)
        grey = region[np.linspace(0, t - 1, min(t, COARSE_FRAMES)).round().astype(int)].mean(1, keepdim=True)
        coarse = _Scorer(grey, gain, offset.mean(0, keepdim=True), reach, sigma)
        found = _best(coarse, range(reach, w - reach, COARSE_STEP), range(reach, h - reach, COARSE_STEP))
        finalists = sorted(found)[:FINALISTS]
    best = (math.inf, 0, 0)
    for _, x0, y0 in finalists:
        xs = range(max(bounds[0], x0 - spread), min(bounds[1], x0 + spread + 1))
        best = min([best, *_best(fine, xs, range(max(bounds[2], y0 - spread), min(bounds[3], y0 + spread + 1)))])
    return best[1] + left, best[2] + top


def fit_stain(clip: torch.Tensor, radius: float, hardness: float, opacity: float, tint: torch.Tensor) -> torch.Tensor:
    """The stain's opacity ``(H, W)`` in a clip as :func:`fit_centre` takes it (the notebook's formula
    at the centre found)."""
    h, w = clip.shape[-2:]
    centre = fit_centre(clip, radius, hardness, opacity, tint)
    return torch.from_numpy(circular_stain_mask(h, w, centre, radius, opacity, hardness)).to(clip.device)
