"""Finding whatever static stain a clip holds, or none: a blind static-overlay estimate with model
choice by evidence.

A stain blends every frame the same way and stays put while the content moves (:mod:`.stain_model`);
the evidence for one is a likelihood of the restored frames' gradients (:mod:`.stain_evidence`).

**The hypotheses**, each fitted and scored on the same frames:

- ``none``: the frames as they are (``a = 1``, ``o = 0``);
- ``disc``: the notebook's stain (a known profile at an unknown centre: :mod:`.stain_fit`'s search;
  :mod:`.stain_disc`);
- ``stains``: one to ``max_layers`` elliptical stains of any size, aspect, angle, hardness, opacity
  and RGB tint, added greedily: a coarse search over centres and sizes on frames spread over the clip
  (the tint read off them), then all of a layer's parameters refined on the frames by gradient descent
  (:mod:`.stain_layers`).

A hypothesis wins over a simpler one only when its gain in log-likelihood on frames it was not fitted
on (fitted on half of the clip's runs of frames, scored on the other half, both ways; a pixel counted
in the frames where it moves) beats the Bayesian information criterion's price for its extra
parameters (``k / 2 * log n``, ``n`` the gradients it reads); a clip without a stain keeps ``none``
and is returned unchanged. A layer must lie inside the frame, and its gain must hold on the moving
content too (:mod:`.stain_layers`): a still face or a highlight can look like a tinted blot in every
frame; only motion through it tells them apart.

**Where it fails**: the evidence comes from content moving under the stain. Where the scene is static
too (a fixed camera's background, a talking head), a stain and a static scene are the same thing to
the frames' likelihood: an elliptical stain there is left in place (no motion speaks for it), and only
the notebook's disc, whose profile is known, is found from the frames alone. Free-form shapes (text,
logos) are fitted by the nearest ellipses: their inverse is then partial, and the repair network sees
what is left.
"""

from __future__ import annotations

import torch

from vidlab.restoration.stain_disc import disc_by_fit, disc_by_likelihood, held_out_evidence
from vidlab.restoration.stain_evidence import bic, fit_scale, fitting_frames, spread_frames
from vidlab.restoration.stain_layers import coarse_search, layer_evidence, refine
from vidlab.restoration.stain_model import StainEstimate, as_layers

PARAMETERS = {"disc": 2, "layer": 10}  # free parameters: a disc's centre; a layer's ten


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
    fitting = fitting_frames(runs)
    fit, scale = fitting.frames, fitting.scale
    t, c, h, w = fit.shape
    n = t * 2 * c * h * w
    evidence = {"none": (0.0, 0)}
    candidates: dict[str, torch.Tensor] = {"none": torch.zeros(0, 10)}
    params = torch.zeros(0, 10)
    for k in range(1, max_layers + 1):
        proposal = coarse_search(spread_frames(fit), params)  # a proposal: frames spread over the clip are enough
        if proposal is None:
            break
        layer = refine(fit, proposal, params)
        name = f"{k} stains"
        evidence[name] = (evidence[_last(k)][0] + layer_evidence(runs, params, layer), k * PARAMETERS["layer"])
        params = torch.cat([params, layer[None]])
        candidates[name] = params.clone()
        if bic(*evidence[name], n) >= bic(*evidence[_last(k)], n):
            break  # the layer did not earn its parameters: more will not either
    found = None
    if disc is not None:
        kept = frames[: sum(len(r) for r in runs)]  # the runs as one clip, a view (a last run of 1 frame is left out)
        # the centre search of stain_fit.py, then, where that disc does not earn its parameters, every
        # centre scored by the likelihood (slower; the search misses on some scenes)
        for find in (lambda clip: disc_by_fit(clip, disc), lambda clip: disc_by_likelihood(clip, disc)):
            found = find(kept)
            if found is None:
                break
            evidence["disc"] = (held_out_evidence(kept, run, find, fit_scale(*kept.shape[-2:], disc["radius"])),
                                PARAMETERS["disc"])
            if bic(*evidence["disc"], n) < 0:
                break
    best = min(evidence, key=lambda name: bic(*evidence[name], n))
    if best == "disc":
        return StainEstimate((found,), "disc", evidence)
    layers = as_layers(candidates[best])
    if scale > 1:
        layers = tuple(layer.scaled(scale) for layer in layers)
    return StainEstimate(layers, "none" if best == "none" else "stains", evidence)


def _last(k: int) -> str:
    return "none" if k == 1 else f"{k - 1} stains"
