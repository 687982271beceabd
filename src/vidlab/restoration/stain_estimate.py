"""Finding whatever static stain a clip holds, or none: a blind static-overlay estimate with model
choice by evidence.

Every stain blends each frame the same way, ``x_t = f_t * a + o`` per pixel, with gain ``a = 1 - m``
(``m`` the opacity) and an offset ``o`` per colour channel (``tint * m`` for one stain; layered stains
compose to the same form), and it is static while the content moves: a clip's frames are the many
images a fixed overlay sits on, as in Dekel et al., "On the Effectiveness of Visible Watermarks"
(CVPR 2017). The restored frames ``f_t = (x_t - o) / a`` should then look like footage, and a wrong
stain leaves a static residue in every frame.

**The evidence** is a likelihood. Each pixel's image gradients over the clip follow a Laplacian whose
scale is the pixel's own (fitted: the mean ``|grad f_t|`` over the frames), plus the blend's Jacobian,
``log a`` per pixel and channel. The scale adapts to the content, and the Jacobian pays back what the
inverse's contrast costs, so the score is invariant to how much texture a region has: a plain
sparse-gradient score (fixed scale, no Jacobian) prefers weaker stains than the true one, which left
the fitted stain 14-20 dB under the truth on real videos (measured); this one scores the true stain as
well as its optimum. Uint8 rounding is the floor of every gradient scale (``ROUNDING / a``), so a flat or
saturated region cannot be "explained" by an opaque stain.

**The hypotheses**, each fitted and scored on the same frames:

- ``none``: the frames as they are (``a = 1``, ``o = 0``);
- ``disc``: the notebook's stain (a known profile at an unknown centre: :mod:`.stain_fit`'s search);
- ``stains``: one to ``max_layers`` elliptical stains of any size, aspect, angle, hardness, opacity
  and RGB tint, added greedily: a coarse search over centres and sizes on frames spread over the clip
  (the tint read off them), then all of a layer's parameters refined on the frames by gradient descent.

A hypothesis wins over a simpler one only when its gain in log-likelihood on frames it was not fitted
on (fitted on half of the clip's runs of frames, scored on the other half, both ways; a pixel counted
in the frames where it moves) beats the Bayesian information criterion's price for its extra
parameters (``k / 2 * log n``, ``n`` the gradients it reads); a clip without a stain keeps ``none``
and is returned unchanged. A layer must lie inside the frame, as every corruption draws its stains.
Its gain is the lesser of two: on the frames, and on their deviations from their run's mean, where the
offset cancels and only the content moving under the stain speaks (dimmed by ``1 - m``). A still face
or a highlight can look like a tinted blot in every frame; only motion through it tells them apart.

**Where it fails**: the evidence comes from content moving under the stain. Where the scene is static
too (a fixed camera's background, a talking head), a stain and a static scene are the same thing to
the frames' likelihood: an elliptical stain there is left in place (no motion speaks for it), and only
the notebook's disc, whose profile is known, is found from the frames alone. Free-form shapes (text,
logos) are fitted by the nearest ellipses: their inverse is then partial, and the repair network sees
what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch

from vidlab.restoration import corruption
from vidlab.restoration.stain_fit import fit_centre, shrink

ROUNDING = 1 / 255        # floor of a gradient's scale in the stained frames (uint8 steps)
DEVIATION_FLOOR = ROUNDING / 2  # and of a deviation from the mean: below half a step it is rounding
FLOOR = 0.02              # 1 - m is floored here while fitting (an opaque centre holds no content)
MAX_ROWS = 96             # frames are shrunk to about this many rows to find and fit stains
FIT_FRAMES = 16           # frames the search and fits read, spread over those given
COARSE_STEP = 3           # pixels between candidate centres of the coarse search
COARSE_RADII = (5, 8, 12, 17, 24)  # candidate radii of the coarse search (pixels at the fitting scale)
COARSE_HARDNESS, COARSE_OPACITY = 1.0, 0.7  # the profile the coarse search assumes
FIT_STEPS = 120           # gradient steps refining one layer
MOVING = 2 / 255          # temporal activity above which content is taken to move
MIN_RADIUS = 8            # pixels: the smallest disc radius the fits shrink a frame to
PARAMETERS = {"disc": 2, "layer": 10}  # free parameters: a disc's centre; a layer's ten


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

    def mask(self, height: int, width: int) -> np.ndarray:
        if self.axes[0] == self.axes[1] and self.angle == 0:
            return corruption.circular_stain_mask(height, width, self.centre, self.axes[0], self.opacity, self.hardness)
        return corruption.elliptical_stain_mask(height, width, self.centre, self.axes, self.angle, self.opacity,
                                                self.hardness)

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

    def blend(self, height: int, width: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Opacity ``(H, W)`` and offset ``(3, H, W)`` at a frame size (float32), by the corruptions'
        own formulas: the notebook's disc is its mask bit for bit."""
        stain = corruption.Stain(tuple(corruption.StainLayer(shape.mask(height, width), shape.tint)
                                       for shape in self.layers), height, width)
        return torch.from_numpy(stain.mask).to(device), torch.from_numpy(stain.offset).permute(2, 0, 1).to(device)

    def summary(self, height: int, width: int) -> dict:
        """The report ``python -m vidlab.restore`` logs: stains, area (pixels with opacity above 0.05),
        mean opacity over that area, the hypothesis and the layers."""
        opacity = self.blend(height, width)[0]
        inside = opacity > 0.05
        return {"stains": len(self.layers), "hypothesis": self.hypothesis, "area_pixels": int(inside.sum()),
                "area_fraction": round(float(inside.float().mean()), 5),
                "mean_opacity": round(float(opacity[inside].mean()), 4) if inside.any() else 0.0,
                "layers": [asdict(layer) for layer in self.layers],
                "evidence": {name: {"log_likelihood_gain": round(gain, 1), "parameters": k}
                             for name, (gain, k) in self.evidence.items()}}


# ---------------------------------------------------------------- the stain model
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


# ---------------------------------------------------------------- the evidence
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


def motion_weights(frames: torch.Tensor) -> torch.Tensor:
    """``(H, W)``: the fraction of consecutive frame pairs in which a pixel changes by more than the
    clip's noise (``MOVING``, or twice the typical pixel's median change, whichever is larger: a codec's
    flicker on a still scene is not motion). A pixel's frames are independent evidence only as far as
    its content moves: a still pixel is one observation, however many frames repeat it."""
    change = (frames[1:] - frames[:-1]).abs().amax(1)
    noise = max(MOVING, 2 * float(change.median(0).values.median()))
    return (change > noise).float().mean(0)


def motion_evidence(deviations: torch.Tensor, params: torch.Tensor) -> float:
    """Log-likelihood gain of layers ``params`` over no stain on the frames' deviations from their
    run's mean (``(T, 3, H, W)``), a gradient's scale floored at ``DEVIATION_FLOOR``. The offset
    cancels there, so only content that moves under a stain speaks for it (its changes scaled by
    ``1 - m`` and restored by the inverse), while a still scene structure shaped like a stain, which
    the frames alone cannot tell from one, gains nothing: a still face or a highlight explained as a
    tinted blot loses here."""
    if not len(params):
        return 0.0
    h, w = deviations.shape[-2:]
    zero = torch.zeros(3, h, w)
    with torch.no_grad():
        gain = render(params, h, w)[0]
        nll = (pixel_nll(deviations, torch.ones(h, w), zero, floor=DEVIATION_FLOOR)
               - pixel_nll(deviations, gain, zero, floor=DEVIATION_FLOOR))
    return float(nll) * deviations.shape[0]


def _bic(evidence: float, parameters: int, gradients: int) -> float:
    """Bayesian information criterion of a hypothesis against ``none``: minus its motion-weighted gain
    in log-likelihood plus ``k / 2 * log n``, ``n`` the gradients read."""
    return -evidence + 0.5 * parameters * math.log(max(gradients, 2))


# ---------------------------------------------------------------- fitting
def _crops(image: torch.Tensor, centres: list[tuple[int, int]], reach: int) -> torch.Tensor:
    """The ``(2 reach + 1)``-pixel squares of ``image`` (``(..., H, W)``) around each centre ``(x, y)``,
    stacked."""
    return torch.stack([image[..., y - reach : y + reach + 1, x - reach : x + reach + 1] for x, y in centres])


def _coarse(frames: torch.Tensor, params: torch.Tensor) -> torch.Tensor | None:
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
        for start in range(0, len(centres), 128):
            chunk = centres[start : start + 128]
            crops, below, added = (_crops(image, chunk, reach) for image in (frames, gain, offset))
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


def _refine(frames: torch.Tensor, params: torch.Tensor, fixed: torch.Tensor, steps: int = FIT_STEPS) -> torch.Tensor:
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


def _layer_evidence(runs: list[torch.Tensor], below: torch.Tensor, layer: torch.Tensor) -> float:
    """A new layer's evidence on frames it was not fitted on: refined from ``layer`` on half of the
    runs (or of one run's frames) and scored over the layers ``below`` on the other half, both ways.
    It is the lesser of two gains, the frames' and the moving content's (:func:`motion_evidence`): a
    stain must explain both how the clip looks and how its motion dims. A stain is static, so each half
    must support it on its own; minus infinity for a layer outside the frame or one half's motion
    against it."""
    halves = ([runs[: len(runs) // 2], runs[len(runs) // 2 :]] if len(runs) > 1
              else [[r] for r in runs[0].split((len(runs[0]) + 1) // 2)])
    fits = [_fitting_frames(half) for half in halves]
    if not _inside(layer, *fits[0].frames.shape[-2:]):
        return -math.inf
    frames_gain = motion_gain = 0.0
    for fitted_on, scored_on in ((fits[0], fits[1]), (fits[1], fits[0])):
        held = _refine(fitted_on.frames, layer, below, FIT_STEPS // 2)
        if not _inside(held, *scored_on.frames.shape[-2:]):
            return -math.inf
        h, w = scored_on.frames.shape[-2:]
        base = pixel_nll(scored_on.frames, torch.ones(h, w), torch.zeros(3, h, w), per_pixel=True)
        above = torch.cat([below, held[None]])
        frames_gain += (_evidence(scored_on.frames, above, scored_on.weights, base)
                        - _evidence(scored_on.frames, below, scored_on.weights, base))
        half_motion = motion_evidence(scored_on.deviations, above) - motion_evidence(scored_on.deviations, below)
        if half_motion < 0:
            return -math.inf
        motion_gain += half_motion
    return min(frames_gain, motion_gain)


def _evidence(frames: torch.Tensor, params: torch.Tensor, weights: torch.Tensor, base: torch.Tensor) -> float:
    """Log-likelihood gain of layers ``params`` over no stain, each pixel's gain per frame counted
    over the frames in which it moves (``weights`` times the frame count); ``base``: the per-pixel
    negative log-likelihood with no stain."""
    if not len(params):
        return 0.0
    with torch.no_grad():
        gain, offset = render(params, *frames.shape[-2:])
        return float(((base - pixel_nll(frames, gain, offset, per_pixel=True)) * weights).sum() * frames.shape[0])


def _disc(frames: torch.Tensor, disc: dict) -> StainShape | None:
    """The notebook's disc at the centre :func:`~vidlab.restoration.stain_fit.fit_centre` finds; None
    where it does not fit the frame."""
    tint = torch.tensor(disc["tint"], dtype=torch.float32).reshape(-1).expand(3)
    try:
        x, y = fit_centre(frames, disc["radius"], disc["hardness"], disc["opacity"], tint)
    except ValueError:
        return None
    return StainShape((x, y), (disc["radius"],) * 2, 0.0, disc["hardness"], disc["opacity"],
                      tuple(float(v) for v in tint))


def _disc_by_likelihood(frames: torch.Tensor, disc: dict, step: int = 3) -> StainShape | None:
    """The disc's centre by this module's likelihood: every ``step``-th centre whose disc fits the
    (shrunk) frame on ``FIT_FRAMES`` frames spread over the clip, then every centre around the best on
    all the frames; mapped back to the frame's own pixels."""
    scale = _scale(*frames.shape[-2:], disc["radius"])
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
            crops = _crops(frames, centres[start : start + 128], reach)
            out.append(pixel_nll(crops, torch.ones(size, size), torch.zeros(c, size, size))
                       - pixel_nll(crops, gain, offset))
        return torch.cat(out)

    coarse = [(x, y) for y in range(reach, h - reach, step) for x in range(reach, w - reach, step)]
    if not coarse:
        return None
    few = _spread(fit)
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


def _held_out_evidence(runs: list[torch.Tensor], find: Callable[[torch.Tensor], StainShape | None],
                       scale: int) -> float:
    """A disc's evidence on frames it was not fitted on: its centre found (``find``) on half of the clip's runs
    (or on half of its one run's frames) and scored on the other half, and the other way round (the two
    gains summed); minus infinity where a half cannot hold it."""
    if len(runs) > 1:
        halves = (torch.cat(runs[: len(runs) // 2]), torch.cat(runs[len(runs) // 2 :]))
        split = ([runs[: len(runs) // 2], runs[len(runs) // 2 :]])
    else:
        half = len(runs[0]) // 2
        halves, split = (runs[0][:half], runs[0][half:]), [[runs[0][:half]], [runs[0][half:]]]
    total = 0.0
    for fitted_on, scored_on in ((halves[0], split[1]), (halves[1], split[0])):
        found = find(fitted_on)
        if found is None or min(len(r) for r in scored_on) < 2:
            return -math.inf
        fit = _fitting_frames(scored_on, scale)
        h, w = fit.frames.shape[-2:]
        base = pixel_nll(fit.frames, torch.ones(h, w), torch.zeros(3, h, w), per_pixel=True)
        total += _evidence(fit.frames, _shrunk(found, scale), fit.weights, base)
    return total


def _scale(height: int, width: int, radius: float | None = None) -> int:
    """How much frames shrink for the fits: to about ``MAX_ROWS`` rows, but not below a disc of
    ``MIN_RADIUS`` pixels of radius (a smaller one is blurred away)."""
    scale = max(1, min(height, width) // MAX_ROWS)
    return scale if radius is None else max(1, min(scale, int(radius // MIN_RADIUS)))


class Fitting(NamedTuple):
    """What the fits read of runs of consecutive frames."""

    frames: torch.Tensor      # up to FIT_FRAMES frames spread over each run, float, shrunk by block means
    weights: torch.Tensor     # (H, W) motion weights, averaged over the runs
    deviations: torch.Tensor  # the frames less their run's mean
    scale: int                # the shrink factor


def _spread(frames: torch.Tensor) -> torch.Tensor:
    """Up to ``FIT_FRAMES`` frames spread evenly over ``frames``."""
    return frames[np.unique(np.linspace(0, len(frames) - 1, min(len(frames), FIT_FRAMES)).round().astype(int))]


def _fitting_frames(runs: list[torch.Tensor], scale: int | None = None) -> Fitting:
    """What the fits read of runs of consecutive frames, shrunk by ``scale`` (or to about ``MAX_ROWS``
    rows)."""
    scale = scale or _scale(*runs[0].shape[-2:])
    chosen = [shrink(_spread(run), scale) for run in runs]
    weights = torch.stack([motion_weights(run) for run in chosen]).mean(0)
    deviations = torch.cat([run - run.mean(0, keepdim=True) for run in chosen])
    return Fitting(torch.cat(chosen), weights, deviations, scale)


def estimate_stain(frames: torch.Tensor, max_layers: int = 3, disc: dict | None = None,
                   run: int | None = None) -> StainEstimate:
    """The static stain of a clip ``(T, 3, H, W)`` (uint8, or float in [0, 1]) at its own size.

    ``disc``: the notebook's stain profile (``radius``, ``hardness``, ``opacity``, ``tint``) to try as
    a hypothesis of its own, whose only free parameters are its centre (None: not tried). ``run``: the
    frames are runs of this many consecutive frames taken apart in the video (a consensus over them:
    their evidence adds up); None: one run."""
    frames = frames.cpu()
    runs = [r for r in frames.split(run or len(frames)) if len(r) >= 2]
    if not runs:
        return StainEstimate((), "none", {"none": (0.0, 0)})  # still images: nothing moves to tell a stain
    fitting = _fitting_frames(runs)
    fit, scale = fitting.frames, fitting.scale
    t, c, h, w = fit.shape
    n = t * 2 * c * h * w
    evidence = {"none": (0.0, 0)}
    candidates: dict[str, torch.Tensor] = {"none": torch.zeros(0, 10)}
    params = torch.zeros(0, 10)
    for k in range(1, max_layers + 1):
        proposal = _coarse(_spread(fit), params)  # a proposal: frames spread over the clip are enough
        if proposal is None:
            break
        layer = _refine(fit, proposal, params)
        name = f"{k} stains"
        evidence[name] = (evidence[_last(k)][0] + _layer_evidence(runs, params, layer), k * PARAMETERS["layer"])
        params = torch.cat([params, layer[None]])
        candidates[name] = params.clone()
        if _bic(*evidence[name], n) >= _bic(*evidence[_last(k)], n):
            break  # the layer did not earn its parameters: more will not either
    found = None
    if disc is not None:
        # the centre search of stain_fit.py, then, where that disc does not earn its parameters, every
        # centre scored by this likelihood (slower; the search misses on some scenes)
        for find in (lambda clip: _disc(clip, disc), lambda clip: _disc_by_likelihood(clip, disc)):
            found = find(torch.cat(runs))
            if found is None:
                break
            evidence["disc"] = (_held_out_evidence(runs, find, _scale(*runs[0].shape[-2:], disc["radius"])),
                                PARAMETERS["disc"])
            if _bic(*evidence["disc"], n) < 0:
                break
    best = min(evidence, key=lambda name: _bic(*evidence[name], n))
    if best == "disc":
        return StainEstimate((found,), "disc", evidence)
    layers = as_layers(candidates[best])
    if scale > 1:
        layers = tuple(layer.scaled(scale) for layer in layers)
    return StainEstimate(layers, "none" if best == "none" else "stains", evidence)


def _last(k: int) -> str:
    return "none" if k == 1 else f"{k - 1} stains"
