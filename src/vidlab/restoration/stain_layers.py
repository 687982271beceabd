"""The ``stains`` hypothesis of :mod:`.stain_estimate`: elliptical stains of any size, aspect, angle,
hardness, opacity and RGB tint, added one layer at a time: a coarse search over centres and sizes on
frames spread over the clip (the tint read off them), then all of a layer's parameters refined on the
frames by gradient descent; and a new layer's evidence on frames it was not fitted on.

A layer must lie inside the frame, as every corruption draws its stains. Its gain is the lesser of
two: on the frames, and on their deviations from their run's mean, where the offset cancels and only
the content moving under the stain speaks (dimmed by ``1 - m``). A still face or a highlight can look
like a tinted blot in every frame; only motion through it tells them apart.
"""

from __future__ import annotations

import math

import torch

from vidlab.restoration.stain_evidence import (
    DEVIATION_FLOOR,
    crops_around,
    fitting_frames,
    frames_evidence,
    motion_evidence,
    none_nll,
    pixel_nll,
)
from vidlab.restoration.stain_model import render

COARSE_STEP = 3           # pixels between candidate centres of the coarse search
COARSE_RADII = (5, 8, 12, 17, 24)  # candidate radii of the coarse search (pixels at the fitting scale)
COARSE_HARDNESS, COARSE_OPACITY = 1.0, 0.7  # the profile the coarse search assumes
FIT_STEPS = 120           # gradient steps refining one layer
AT_ONCE = 32              # candidates scored at once (their crops: 16 MB at the largest radius)


def coarse_search(frames: torch.Tensor, params: torch.Tensor) -> torch.Tensor | None:
    """The best new round layer by a grid search over centres and radii (the coarse profile assumed,
    its tint read off the clip: the mean inside the candidate's core against the mean around it), on
    top of the layers ``params`` already found: ``(10,)`` parameters, or None when no candidate raises
    the likelihood."""
    t, c, h, w = frames.shape
    gain, offset = render(params, h, w)
    best, best_score = None, 0.0
    for radius in COARSE_RADII:
        reach = radius + 1
        size = 2 * reach + 1
        if size > min(h, w):
            continue
        template = torch.zeros(1, 10)
        template[0, :2] = reach
        template[0, 2:4] = math.log(radius)
        template[0, 5] = math.log(COARSE_HARDNESS)
        template[0, 6] = math.log(COARSE_OPACITY / (1 - COARSE_OPACITY))
        layer_gain = render(template, size, size)[0]
        mask = 1 - layer_gain
        core = mask >= mask.max() * 0.7
        ring = mask == 0
        centres = [(x, y) for y in range(reach, h - reach, COARSE_STEP) for x in range(reach, w - reach, COARSE_STEP)]
        for start in range(0, len(centres), AT_ONCE):
            chunk = centres[start : start + AT_ONCE]
            crops, below, added = (crops_around(image, chunk, reach) for image in (frames, gain, offset))
            means = crops.mean(1)  # (N, 3, size, size)
            m_core = float(mask[core].mean())
            tint = ((means[..., core].mean(-1) - (1 - m_core) * means[..., ring].mean(-1)) / m_core).clamp(0, 1)
            layer_offset = tint[..., None, None] * mask
            gains = (pixel_nll(crops, below, added)
                     - pixel_nll(crops, below * layer_gain, added * layer_gain + layer_offset))
            k = int(gains.argmax())
            if float(gains[k]) > best_score:
                best_score = float(gains[k])
                best = template[0].clone()
                best[:2] = torch.tensor(chunk[k], dtype=torch.float32)
                best[7:10] = torch.logit(tint[k].clamp(0.02, 0.98))
    return best


def refine(frames: torch.Tensor, params: torch.Tensor, fixed: torch.Tensor, steps: int = FIT_STEPS) -> torch.Tensor:
    """All parameters of the last layer of ``params`` fitted by Adam on the region around it, the
    earlier layers ``fixed`` blended below. Autograd is switched on here: restore, evaluation and
    Lightning's validation call the estimate without it (their tensors cloned out of inference mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _adam(frames.clone(), params.clone(), fixed.clone(), steps)


def _adam(frames: torch.Tensor, params: torch.Tensor, fixed: torch.Tensor, steps: int) -> torch.Tensor:
    h, w = frames.shape[-2:]
    # Adam's steps are about its rate whatever the gradient's size: pixels, log-scales and logits each
    # move at their own
    rates = torch.tensor([0.3, 0.3, 0.03, 0.03, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1])
    step = torch.zeros(10, requires_grad=True)
    optimiser = torch.optim.Adam([step], lr=1.0)
    for _ in range(steps):
        p = params + step * rates
        reach = int(math.ceil(float(p[2:4].detach().exp().max()))) + 3
        x0, y0 = int(p[0].detach()), int(p[1].detach())
        left, top = max(0, x0 - reach), max(0, y0 - reach)
        right, bottom = min(w, x0 + reach + 1), min(h, y0 + reach + 1)
        if right - left < 3 or bottom - top < 3:
            break
        region = frames[..., top:bottom, left:right]
        gain_below, offset_below = render(fixed, bottom - top, right - left, (left, top))
        gain, offset = render(p[None], bottom - top, right - left, (left, top))
        loss = pixel_nll(region, gain_below * gain, offset_below * gain + offset)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (params + step * rates).detach()


def _inside(layer: torch.Tensor, height: int, width: int) -> bool:
    """Whether a layer's ellipse lies in the frame, as every corruption draws its stains (a pixel's
    slack): a "stain" reaching past the frame is a scene's band or border, not a blot on the lens."""
    x, y, reach = float(layer[0]), float(layer[1]), float(layer[2:4].exp().max())
    return reach <= min(x, width - 1 - x, y, height - 1 - y) + 1


def layer_evidence(runs: list[torch.Tensor], below: torch.Tensor, layer: torch.Tensor) -> float:
    """A new layer's evidence on frames it was not fitted on: refined from ``layer`` on half of the
    runs (or of one run's frames) and scored over the layers ``below`` on the other half, both ways.
    It is the lesser of two gains, the frames' and the moving content's (:func:`motion_evidence`): a
    stain must explain both how the clip looks and how its motion dims. A stain is static, so each half
    must support it on its own; minus infinity for a layer outside the frame or one half's motion
    against it."""
    halves = ([runs[: len(runs) // 2], runs[len(runs) // 2 :]] if len(runs) > 1
              else [[r] for r in runs[0].split((len(runs[0]) + 1) // 2)])
    fits = [fitting_frames(half) for half in halves]
    if not _inside(layer, *fits[0].frames.shape[-2:]):
        return -math.inf
    frames_gain = motion_gain = 0.0
    for fitted_on, scored_on in ((fits[0], fits[1]), (fits[1], fits[0])):
        held = refine(fitted_on.frames, layer, below, FIT_STEPS // 2)
        if not _inside(held, *scored_on.frames.shape[-2:]):
            return -math.inf
        deviations = scored_on.deviations
        base, motion_base = none_nll(scored_on.frames), none_nll(deviations, DEVIATION_FLOOR)
        above = torch.cat([below, held[None]])
        frames_gain += (frames_evidence(scored_on.frames, above, scored_on.weights, base)
                        - frames_evidence(scored_on.frames, below, scored_on.weights, base))
        half_motion = (motion_evidence(deviations, above, scored_on.weights, motion_base)
                       - motion_evidence(deviations, below, scored_on.weights, motion_base))
        if half_motion < 0:
            return -math.inf
        motion_gain += half_motion
    return min(frames_gain, motion_gain)
