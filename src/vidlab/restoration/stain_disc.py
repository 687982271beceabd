"""The ``disc`` hypothesis of :mod:`.stain_estimate`: the notebook's stain, a known profile at an
unknown centre, found by :mod:`.stain_fit`'s search or by every centre scored by the likelihood of
:mod:`.stain_evidence`; and its evidence on frames it was not fitted on. Its centre is its only free
parameter, and its profile is known: it is the one stain found where the scene is static too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from vidlab.restoration.stain_evidence import (
    crops_around,
    fit_scale,
    fitting_frames,
    frames_evidence,
    none_nll,
    pixel_nll,
    spread_frames,
)
from vidlab.restoration.stain_fit import fit_centre, shrink
from vidlab.restoration.stain_model import StainShape, layer_parameters


def disc_by_fit(frames: torch.Tensor, disc: dict) -> StainShape | None:
    """The notebook's disc at the centre :func:`~vidlab.restoration.stain_fit.fit_centre` finds; None
    where it does not fit the frame."""
    tint = torch.tensor(disc["tint"], dtype=torch.float32).reshape(-1).expand(3)
    try:
        x, y = fit_centre(frames, disc["radius"], disc["hardness"], disc["opacity"], tint)
    except ValueError:
        return None
    return StainShape((x, y), (disc["radius"],) * 2, 0.0, disc["hardness"], disc["opacity"],
                      tuple(float(v) for v in tint))


def disc_by_likelihood(frames: torch.Tensor, disc: dict, step: int = 3) -> StainShape | None:
    """The disc's centre by the likelihood of :mod:`.stain_evidence`: every ``step``-th centre whose
    disc fits the (shrunk) frame on ``FIT_FRAMES`` frames spread over the clip, then every centre around
    the best on all the frames; mapped back to the frame's own pixels."""
    scale = fit_scale(*frames.shape[-2:], disc["radius"])
    fit = shrink(frames, scale)
    t, c, h, w = fit.shape
    tint = torch.tensor(disc["tint"], dtype=torch.float32).reshape(-1).expand(3)
    radius = disc["radius"] / scale
    reach = math.ceil(radius)
    size = 2 * reach + 1
    if size > min(h, w):
        return None
    template = StainShape((reach, reach), (radius, radius), 0.0, disc["hardness"], disc["opacity"],
                          tuple(float(v) for v in tint))
    mask = torch.from_numpy(template.mask(size, size))
    gain, offset = 1 - mask, tint[:, None, None] * mask

    def gains(centres: list[tuple[int, int]], frames: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(centres), 128):
            crops = crops_around(frames, centres[start : start + 128], reach)
            out.append(pixel_nll(crops, torch.ones(size, size), torch.zeros(c, size, size))
                       - pixel_nll(crops, gain, offset))
        return torch.cat(out)

    coarse = [(x, y) for y in range(reach, h - reach, step) for x in range(reach, w - reach, step)]
    if not coarse:
        return None
    few = spread_frames(fit)
    x0, y0 = coarse[int(gains(coarse, few).argmax())]
    fine = [(x, y) for y in range(max(reach, y0 - step), min(h - reach, y0 + step + 1))
            for x in range(max(reach, x0 - step), min(w - reach, x0 + step + 1))]
    x, y = fine[int(gains(fine, fit).argmax())]
    shape = StainShape((x * scale + (scale - 1) // 2, y * scale + (scale - 1) // 2), (disc["radius"],) * 2, 0.0,
                       disc["hardness"], disc["opacity"], template.tint)
    return shape if scale == 1 else _refine_centre(frames, shape, scale)


def _refine_centre(frames: torch.Tensor, shape: StainShape, spread: int) -> StainShape:
    """A disc's centre refined at the frames' own size: every centre within ``spread`` pixels scored
    by the likelihood on the pixels around it (a shrunk frame places it to within its scale)."""
    h, w = frames.shape[-2:]
    reach = math.ceil(shape.axes[0])
    x0, y0 = shape.centre
    top, left = max(0, y0 - spread - reach), max(0, x0 - spread - reach)
    region = shrink(frames[..., top : min(h, y0 + spread + reach + 1), left : min(w, x0 + spread + reach + 1)], 1)
    rh, rw = region.shape[-2:]
    none = pixel_nll(region, torch.ones(rh, rw), torch.zeros(3, rh, rw))
    best, best_gain = shape, -math.inf
    for y in range(max(reach, y0 - spread), min(h - reach, y0 + spread + 1)):
        for x in range(max(reach, x0 - spread), min(w - reach, x0 + spread + 1)):
            mask = torch.from_numpy(replace(shape, centre=(x - left, y - top)).mask(rh, rw))
            gain = float(none - pixel_nll(region, 1 - mask, torch.tensor(shape.tint)[:, None, None] * mask))
            if gain > best_gain:
                best, best_gain = replace(shape, centre=(x, y)), gain
    return best


def _shrunk(shape: StainShape, scale: int) -> torch.Tensor:
    """A shape's ``(1, 10)`` parameters on frames shrunk by ``scale``."""
    return layer_parameters([shape.scaled(1 / scale)])


def held_out_evidence(clip: torch.Tensor, run: int | None, find: Callable[[torch.Tensor], StainShape | None],
                       scale: int) -> float:
    """A disc's evidence on frames it was not fitted on: its centre found (``find``) on half of the
    clip's runs of ``run`` frames (or on half of its one run's frames) and scored on the other half, and
    the other way round (the two gains summed); minus infinity where a half cannot hold it. The halves
    are views of the clip: a native video's sample is hundreds of MB."""
    runs = list(clip.split(run or len(clip)))
    cut = sum(len(r) for r in runs[: len(runs) // 2]) if len(runs) > 1 else len(clip) // 2
    halves = (clip[:cut], clip[cut:])
    split = (runs[: len(runs) // 2], runs[len(runs) // 2 :]) if len(runs) > 1 else ([halves[0]], [halves[1]])
    total = 0.0
    for fitted_on, scored_on in ((halves[0], split[1]), (halves[1], split[0])):
        found = find(fitted_on)
        if found is None or min(len(r) for r in scored_on) < 2:
            return -math.inf
        fit = fitting_frames(scored_on, scale)
        total += frames_evidence(fit.frames, _shrunk(found, scale), fit.weights, none_nll(fit.frames))
    return total
