"""The evidence for a stain: the frames' likelihood under it, the moving content's, the Bayesian
information criterion's price for its parameters, and what the fits read of the frames.

**The evidence** is a likelihood. Each pixel's image gradients over the clip follow a Laplacian whose
scale is the pixel's own (fitted: the mean ``|grad f_t|`` over the frames), plus the blend's Jacobian,
``log a`` per pixel and channel. The scale adapts to the content, and the Jacobian pays back what the
inverse's contrast costs, so the score is invariant to how much texture a region has: a plain
sparse-gradient score (fixed scale, no Jacobian) prefers weaker stains than the true one; this one
scores the true stain as well as its optimum. Uint8 rounding is the floor of every gradient scale
(``ROUNDING / a``), so a flat or saturated region cannot be "explained" by an opaque stain.

A pixel is counted in the frames where it moves (:func:`motion_weights`), and a hypothesis pays the
Bayesian information criterion's price for its extra parameters (``k / 2 * log n``, ``n`` the gradients
it reads: :func:`bic`). The fits read runs of consecutive frames, spread over each run and shrunk to
about ``MAX_ROWS`` rows (:func:`fitting_frames`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from vidlab.restoration.stain_fit import VALUES_AT_ONCE, shrink
from vidlab.restoration.stain_model import render

ROUNDING = 1 / 255        # floor of a gradient's scale in the stained frames (uint8 steps)
DEVIATION_FLOOR = ROUNDING / 2  # and of a deviation from the mean: below half a step it is rounding
FLOOR = 0.02              # 1 - m is floored here while fitting (an opaque centre holds no content)
MAX_ROWS = 96             # frames are shrunk to about this many rows to find and fit stains
FIT_FRAMES = 16           # frames the search and fits read, spread over those given
MOVING = 2 / 255          # temporal activity above which content is taken to move
MIN_RADIUS = 8            # pixels: the smallest disc radius the fits shrink a frame to


def pixel_nll(frames: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, per_pixel: bool = False,
              floor: float = ROUNDING) -> torch.Tensor:
    """Negative log-likelihood per frame of frames ``(..., T, 3, H, W)`` under a stain (gain
    ``(..., H, W)``, offset ``(..., 3, H, W)``), summed over the region (``per_pixel``: the map
    ``(..., H, W)``, each gradient's term on the pixel it starts from). Per gradient and channel: half
    its log scale, plus a quarter of the Jacobian ``log a`` of each of its two pixels, so that an
    inner pixel (four gradients) pays ``log a`` per channel and a border pixel only what its gradients
    read: scaling any region's content leaves the sum unchanged. ``floor``: the smallest scale of a
    gradient of the stained frames, restored through the smaller gain of its two pixels (the rounding
    of the more opaque pixel dominates their difference). Constants common to every hypothesis are
    dropped."""
    a = gain.clamp(min=FLOOR)
    restored = (frames - offset.unsqueeze(-4)) / a.unsqueeze(-3).unsqueeze(-4)
    terms = []
    for g, low, high in ((restored[..., :, 1:] - restored[..., :, :-1], a[..., :, 1:], a[..., :, :-1]),
                         (restored[..., 1:, :] - restored[..., :-1, :], a[..., 1:, :], a[..., :-1, :])):
        scale = g.abs().mean(-4) + (floor / torch.minimum(low, high)).unsqueeze(-3)
        terms.append(0.5 * scale.log().sum(-3) + 0.25 * frames.shape[-3] * (low.log() + high.log()))
    if per_pixel:
        return torch.nn.functional.pad(terms[0], (0, 1)) + torch.nn.functional.pad(terms[1], (0, 0, 0, 1))
    return terms[0].sum((-2, -1)) + terms[1].sum((-2, -1))


def nll_map(frames: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor, floor: float = ROUNDING) -> torch.Tensor:
    """:func:`pixel_nll`'s per-pixel map ``(H, W)``, computed over strips of rows, each read with the row
    below it (which its vertical gradients reach): each pixel's terms read what they read on the whole
    frame (equal up to the last bit of vectorised float rounding; the estimates of docs/benchmarks.md's
    videos are equal), in memory bounded by ``VALUES_AT_ONCE``, not by the frames (a native video's
    shrunk sample is 0.1-0.2 GB)."""
    h, w = frames.shape[-2:]
    rows = max(1, VALUES_AT_ONCE // (frames[..., :1, :].numel()))
    strips = []
    for top in range(0, h, rows):
        bottom, read = min(h, top + rows), min(h, top + rows + 1)
        nll = pixel_nll(frames[..., top:read, :], gain[..., top:read, :], offset[..., top:read, :], True, floor)
        strips.append(nll[..., : bottom - top, :])
    return torch.cat(strips, -2)


def motion_weights(frames: torch.Tensor) -> torch.Tensor:
    """``(H, W)``: the fraction of consecutive frame pairs in which a pixel changes by more than the
    clip's noise (``MOVING``, or twice the typical pixel's median change, whichever is larger: a codec's
    flicker on a still scene is not motion). A pixel's frames are independent evidence only as far as
    its content moves: a still pixel is one observation, however many frames repeat it."""
    change = (frames[1:] - frames[:-1]).abs().amax(1)
    noise = max(MOVING, 2 * float(change.median(0).values.median()))
    return (change > noise).float().mean(0)


def none_nll(frames: torch.Tensor, floor: float = ROUNDING) -> torch.Tensor:
    """``(H, W)``: the per-pixel negative log-likelihood of frames with no stain, the base every
    hypothesis' gain is measured from (computed once per set of frames scored)."""
    h, w = frames.shape[-2:]
    return nll_map(frames, torch.ones(h, w), torch.zeros(3, h, w), floor)


def frames_evidence(frames: torch.Tensor, params: torch.Tensor, weights: torch.Tensor, base: torch.Tensor,
                    floor: float = ROUNDING, offset: bool = True) -> float:
    """Log-likelihood gain of layers ``params`` over no stain, each pixel's gain per frame counted
    over the frames in which it moves (``weights`` times the frame count); ``base``: :func:`none_nll`
    of the frames (with the same ``floor``); ``offset=False`` scores the gain alone (deviations)."""
    if not len(params):
        return 0.0
    with torch.no_grad():
        gain, added = render(params, *frames.shape[-2:])
        if not offset:
            added = torch.zeros_like(added)
        return float(((base - nll_map(frames, gain, added, floor)) * weights).sum()
                     * frames.shape[0])


def motion_evidence(deviations: torch.Tensor, params: torch.Tensor, weights: torch.Tensor,
                    base: torch.Tensor) -> float:
    """Log-likelihood gain of layers ``params`` over no stain on the frames' deviations from their
    run's mean (``(T, 3, H, W)``; ``base``: their :func:`none_nll` at ``DEVIATION_FLOOR``), a
    gradient's scale floored at ``DEVIATION_FLOOR``, each pixel counted over the frames in which it
    moves, as :func:`frames_evidence` counts it. The offset cancels there, so only content that moves
    under a stain speaks for it (its changes scaled by ``1 - m`` and restored by the inverse), while a
    still scene structure shaped like a stain, which the frames alone cannot tell from one, gains
    nothing: a still face or a highlight explained as a tinted blot loses here. A still pixel's
    deviations are its rounding alone, which the inverse amplifies most where the stain is most opaque:
    counted unweighted, they score even the true stain below none (docs/restoration.md)."""
    return frames_evidence(deviations, params, weights, base, DEVIATION_FLOOR, offset=False)


def bic(evidence: float, parameters: int, gradients: int) -> float:
    """Bayesian information criterion of a hypothesis against ``none``: minus its motion-weighted gain
    in log-likelihood plus ``k / 2 * log n``, ``n`` the gradients read."""
    return -evidence + 0.5 * parameters * math.log(max(gradients, 2))


def fit_scale(height: int, width: int, radius: float | None = None) -> int:
    """How much frames shrink for the fits: to about ``MAX_ROWS`` rows, but not below a disc of
    ``MIN_RADIUS`` pixels of radius (a smaller one is blurred away)."""
    scale = max(1, min(height, width) // MAX_ROWS)
    return scale if radius is None else max(1, min(scale, int(radius // MIN_RADIUS)))


class Fitting(NamedTuple):
    """What the fits read of runs of consecutive frames."""

    frames: torch.Tensor      # up to FIT_FRAMES frames spread over each run, float, shrunk by block means
    weights: torch.Tensor     # (H, W) motion weights, averaged over the runs
    lengths: list[int]        # frames of each run in ``frames``
    scale: int                # the shrink factor

    @property
    def deviations(self) -> torch.Tensor:
        """The frames less their run's mean (made where read: as large as the frames)."""
        return torch.cat([run - run.mean(0, keepdim=True) for run in self.frames.split(self.lengths)])


def spread_frames(frames: torch.Tensor) -> torch.Tensor:
    """Up to ``FIT_FRAMES`` frames spread evenly over ``frames`` (``frames`` themselves, not a copy,
    when that is all of them)."""
    if len(frames) <= FIT_FRAMES:
        return frames
    return frames[np.unique(np.linspace(0, len(frames) - 1, FIT_FRAMES).round().astype(int))]


def fitting_frames(runs: list[torch.Tensor], scale: int | None = None) -> Fitting:
    """What the fits read of runs of consecutive frames, shrunk by ``scale`` (or to about ``MAX_ROWS``
    rows)."""
    scale = scale or fit_scale(*runs[0].shape[-2:])
    chosen = [spread_frames(run) for run in runs]
    frames = shrink([frame for run in chosen for frame in run], scale)  # no copy of the native frames
    lengths = [len(run) for run in chosen]
    weights = torch.stack([motion_weights(run) for run in frames.split(lengths)]).mean(0)
    return Fitting(frames, weights, lengths, scale)


def crops_around(image: torch.Tensor, centres: list[tuple[int, int]], reach: int) -> torch.Tensor:
    """The ``(2 reach + 1)``-pixel squares of ``image`` (``(..., H, W)``) around each centre ``(x, y)``,
    stacked."""
    return torch.stack([image[..., y - reach : y + reach + 1, x - reach : x + reach + 1] for x, y in centres])
