"""Blend-aware blind restoration: estimate the clip's static stain, invert its blend, repair the rest.

A stain blends every frame the same way, ``x_t = f_t * (1 - m) + tint * m`` per pixel (layered stains
compose to the same form, with an effective opacity ``m`` and tint colour), and it is static over a
clip, as a watermark is over Dekel et al.'s image collection (CVPR 2017). So the model reads the whole
clip: an estimator U-Net maps per-pixel statistics over time (minimum, maximum, mean, mean absolute
frame difference; all of them are squeezed by ``1 - m`` and pulled towards the tint inside a stain)
to the opacity ``m`` and tint; every frame is put back through the inverse blend
``(x - tint * m) / (1 - m)``; a refiner U-Net then corrects what the inverse cannot (where ``m``
nears 1 the content is gone and uint8 rounding is amplified), scaled by ``m`` so that pixels outside
the stain pass through untouched. Nothing needs the true mask at inference. Training scores the restored
frames, the estimated opacity against the true stain (as WDNet, Liu et al. WACV 2021, and SLBR,
Liang et al. ACM MM 2021, train their mask branch) and the inverse-blend frames alone, weighted by
what the stain lets through: without that last term the repair U-Net hides an imprecise estimate, and
the inverse alone stays far from the true stain's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vidlab.restoration.corruption import CORRUPTIONS, CircularStain
from vidlab.restoration.models.unet import ConvUNet, ConvUNetConfig
from vidlab.restoration.nets import MODELS, RestorationNet, TrainingOutput, neighbour_indices
from vidlab.restoration.stain_estimate import estimate_stain
from vidlab.restoration.stain_model import StainEstimate
from vidlab.schema import at_least, require

INSIDE_STAIN = 0.01  # opacity above which the inverse-blend loss scores a pixel
STATISTICS = ("minimum", "maximum", "mean", "motion")  # per channel, over the clip's frames


class FoundStain(NamedTuple):
    """A segment's (or a video's) stain found on whole frames of ``height`` x ``width``: the estimate
    (restore's report), its blend rendered where it is read."""

    estimate: StainEstimate
    height: int
    width: int
    device: torch.device

    def region(self, rows: slice = slice(None), cols: slice = slice(None)) -> torch.Tensor:
        """``(4, h, w)``: the opacity then the offset per channel on these rows and columns of the frame
        (restore renders each tile's: a whole 4K frame's is 0.13 GB)."""
        opacity, offset = self.estimate.blend(self.height, self.width, self.device, (rows, cols))
        return torch.cat([opacity[None], offset])

    @property
    def blend(self) -> torch.Tensor:
        """``(4, H, W)``: :meth:`region` on the whole frame."""
        return self.region()

    def box(self) -> tuple[slice, slice]:
        """Rows and columns outside which the stain blends nothing (:meth:`StainEstimate.box`)."""
        return self.estimate.box(self.height, self.width)


class BlendOutput(NamedTuple):
    """What training scores: the restored frames and the inverse-blend frames ``(B, S, 3, H, W)``
    (the inverse alone, before repair), and the opacity logits ``(B, 1, H, W)`` (None when the stain
    is fitted: nothing is learned about it)."""

    frames: torch.Tensor
    inverted: torch.Tensor
    opacity_logits: torch.Tensor | None


def _as_clip(frames: np.ndarray | list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames (a list, or stacked ``(T, H, W, 3)``, which is not copied) as a uint8
    clip ``(T, 3, H, W)`` on ``device``."""
    stacked = frames if isinstance(frames, np.ndarray) else np.stack(frames)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).to(device)


def clip_statistics(clip: torch.Tensor) -> torch.Tensor:
    """``(B, T, 3, H, W)`` -> ``(B, 12, H, W)``: per-pixel min, max, mean and mean ``|x_t - x_{t-1}|``."""
    motion = (clip[:, 1:] - clip[:, :-1]).abs().mean(1) if clip.shape[1] > 1 else torch.zeros_like(clip[:, 0])
    return torch.cat([clip.amin(1), clip.amax(1), clip.mean(1), motion], dim=1)


def invert_blend(frames: torch.Tensor, opacity: torch.Tensor, offset: torch.Tensor, min_gain: float) -> torch.Tensor:
    """``(x - offset) / (1 - m)`` clamped to [0, 1], where ``offset`` is what the stain adds (``tint * m``
    for one stain); ``1 - m`` is floored at ``min_gain`` (where the stain is opaque the content is
    gone, and dividing by ~0 only amplifies rounding). The baselines' analytic inverse is this too."""
    gain = (1 - opacity).clamp(min=min_gain)
    return ((frames - offset) / gain).clamp(0, 1)


@dataclass
class BlendUNetConfig(ConvUNetConfig):
    window: int  # frames one stain estimate reads: training windows, evaluation and restore segments
    min_gain: float
    stain: Any  # the corruption's node: a circular stain is fitted (its centre searched); others, or null, learned
    max_stains: int  # elliptical stains a fitted model also looks for (0: the disc or none)

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(2, self, "window")
        require(0 < self.min_gain < 1, f"min_gain must be in (0, 1) (got {self.min_gain})")
        require(0 <= self.max_stains <= 5, f"max_stains must be in [0, 5] (got {self.max_stains})")
        require(self.stain is None or isinstance(self.stain, dict),
                f"stain must be a corruption's node (model.stain: ${{corruption}}) or null (got {self.stain!r})")
        if self.stain is not None:
            self.stain = CORRUPTIONS.config(self.stain, "model.stain")


@MODELS.register("blend_unet", BlendUNetConfig)
class BlendUNet(RestorationNet):
    """Blend-aware blind restoration: finds the clip's static stain, inverts its blend, repairs the rest.

    Reads windows of ``window`` stained frames ``(B, window, 3, H, W)`` in [0, 1]; one stain
    estimate per window. Training calls :meth:`forward`, evaluation and restore :meth:`restore`.

    When ``stain``, the corruption it is trained on, is a :class:`CircularStain` (the notebook's
    disc), the stain is not learned but fitted (:mod:`vidlab.restoration.stain_fit`): only its centre
    is unknown, and the whole frame is searched for it (restore searches it before cutting frames into
    tiles). Training then inverts with the true stain, and only the repair U-Net learns. For any other corruption (or
    none given), an estimator U-Net learns the stain per pixel."""

    def __init__(self, window: int, context_frames: int, depth: int, base_channels: int, norm: str, min_gain: float,
                 stain: object = None, max_stains: int = 0):  # 0: as checkpoints written before max_stains
        super().__init__()
        self.window, self.context_frames, self.depth, self.min_gain = window, context_frames, depth, min_gain
        self.max_stains = max_stains
        self.stain = stain if isinstance(stain, CircularStain) else None
        # grey or RGB
        self.tint = None if self.stain is None else torch.tensor(self.stain.tint, dtype=torch.float32).reshape(-1)
        self.estimator = None if self.stain else ConvUNet(3 * len(STATISTICS), 4, depth, base_channels, norm)
        self.refiner = ConvUNet(3 * context_frames + 4, 3, depth, base_channels, norm)
        # the refiner reads the estimate around each pixel (a fitted one is found before tiling)
        self.halo = self.refiner.halo + (self.estimator.halo if self.estimator else 0)

    @property
    def size_multiple(self) -> int:
        return self.refiner.size_multiple

    @property
    def tileable(self) -> bool:
        return self.refiner.tileable

    def check_frame(self, height: int, width: int) -> None:
        """A fitted stain must fit the frame, as the notebook draws it."""
        if self.stain is not None:
            self.stain.check_frame(height, width)

    def estimate_logits(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Opacity logits ``(B, 1, H, W)`` (the mask loss is a BCE on them) and tint ``(B, 3, H, W)``."""
        out = self.estimator(clip_statistics(clip))
        return out[:, :1], torch.sigmoid(out[:, 1:])

    def refine(self, inverted: torch.Tensor, opacity: torch.Tensor, tint: torch.Tensor) -> torch.Tensor:
        """``inverted`` ``(N, k, 3, H, W)`` neighbours of each output frame after the inverse blend."""
        n, k, c, h, w = inverted.shape
        correction = self.refiner(torch.cat([inverted.reshape(n, k * c, h, w), opacity, tint], dim=1))
        return inverted[:, k // 2] + opacity * correction

    def find_stain(self, frames: torch.Tensor, run: int | None = None) -> FoundStain:
        """The stain in frames ``(T, 3, H, W)`` (uint8, or float in [0, 1]; runs of ``run`` consecutive
        frames, or one run), by evidence (:mod:`vidlab.restoration.stain_estimate`): the disc the model
        was trained on, up to ``max_stains`` elliptical stains, or none (opacity 0: the frames pass
        through unchanged)."""
        stain = self.stain
        disc = {"radius": stain.radius, "hardness": stain.hardness, "opacity": stain.opacity,
                "tint": self.tint.tolist()}
        # 0.3's pickled MLflow models lack it (until 0.5)
        estimate = estimate_stain(frames, getattr(self, "max_stains", 0), disc, run)
        return FoundStain(estimate, *frames.shape[-2:], frames.device)

    def stain_of(self, clip: torch.Tensor, blend: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stain of windows ``(B, W, 3, H, W)``: the opacity logits (None for a fitted stain), opacity,
        offset and tint ``(B, 1|3, H, W)``. For a fitted stain, ``blend`` is the one to use instead of
        searching the window: ``(B, 1, H, W)`` the true opacity in training (blended towards the model's
        tint), or ``(B, 4, H, W)`` opacity and offset found on the whole frame when restore cuts frames
        into tiles."""
        if self.stain is None:
            logits, tint = self.estimate_logits(clip)
            opacity = torch.sigmoid(logits)
            return logits, opacity, tint * opacity, tint
        if blend is None:
            blend = torch.stack([self.find_stain(c).blend for c in clip])
        own = self.tint.to(clip).reshape(1, -1, 1, 1).expand(1, 3, 1, 1)  # grey or RGB
        if blend.shape[1] == 1:
            blend = torch.cat([blend, own * blend], 1)
        opacity, offset = blend[:, :1], blend[:, 1:]
        # the refiner reads the tint: where no stain lies, the model's own
        return None, opacity, offset, torch.where(opacity > 1e-4, offset / opacity.clamp(min=1e-4), own)

    def invert(self, clip: torch.Tensor, blend: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Windows ``(B, W, 3, H, W)`` through their stain's inverse (:meth:`stain_of`): the inverted
        frames, the opacity logits, opacity and tint."""
        logits, opacity, offset, tint = self.stain_of(clip, blend)
        return invert_blend(clip, opacity[:, None], offset[:, None], self.min_gain), logits, opacity, tint

    def forward(self, clip: torch.Tensor, centres: torch.Tensor, blend: torch.Tensor | None = None) -> BlendOutput:
        """Windows ``(B, W, 3, H, W)`` and the frames to restore in each ``(B, S)``; ``blend`` as in
        :meth:`invert`."""
        b, t = clip.shape[:2]
        inverted, logits, opacity, tint = self.invert(clip, blend)
        s = centres.shape[1]
        idx = torch.as_tensor(neighbour_indices(centres.cpu().numpy(), self.context_frames, t), device=clip.device)
        stacks = inverted[torch.arange(b, device=clip.device)[:, None, None], idx]  # (B, S, k, 3, H, W)
        frames = self.refine(stacks.flatten(0, 1), opacity.repeat_interleave(s, 0), tint.repeat_interleave(s, 0))
        return BlendOutput(frames.unflatten(0, (b, s)), stacks[:, :, self.context_frames // 2], logits)

    def training_output(self, batch: dict[str, torch.Tensor]) -> TrainingOutput:
        """A fitted stain inverts with the true one and has nothing to learn; a learned one is scored
        by a BCE on its opacity and by the inverse alone inside the stain, weighted by what the stain
        lets through."""
        mask, centres = batch["mask"], batch["centres"]
        out = self(batch["stained"], centres, mask if self.stain else None)
        restored, clean = out.frames.flatten(0, 1), batch["clean"].flatten(0, 1)
        per_frame = mask.repeat_interleave(centres.shape[1], 0)
        losses = {}
        if out.opacity_logits is not None:
            losses["mask_bce"] = F.binary_cross_entropy_with_logits(out.opacity_logits, mask)
            through = (1 - per_frame) * (per_frame > INSIDE_STAIN)
            error = through * (out.inverted.flatten(0, 1) - clean).abs()
            losses["inverse_l1"] = error.sum() / (3 * through.sum()).clamp(min=1)
        return TrainingOutput(restored, clean, per_frame, losses)

    def find_stains(self, frames: list[np.ndarray], centres: range, device: torch.device
                    ) -> dict[tuple[int, int], FoundStain] | None:
        if self.stain is None:
            return None
        segments = {self.segment(c, len(frames)) for c in centres}
        return {(start, stop): self.find_stain(_as_clip(frames[start:stop], device)) for start, stop in segments}

    def find_video_stain(self, runs: np.ndarray, run: int, device: torch.device) -> FoundStain | None:
        return None if self.stain is None else self.find_stain(_as_clip(runs, device), run)

    @torch.no_grad()
    def restore(self, clip: torch.Tensor, centres: np.ndarray, batch: int, mask: torch.Tensor | None = None,
                stains: dict[tuple[int, int], torch.Tensor] | torch.Tensor | None = None) -> torch.Tensor:
        """Restore frames ``centres`` of a float clip ``(T, 3, H, W)`` (whose frame 0 starts a segment),
        each from its segment's stain estimate (``stains[(start, stop)]``, the fitted opacity and offset
        ``(4, H, W)`` of the clip's pixels, when found beforehand), or from one stain for every frame
        (``stains`` a ``(4, H, W)`` tensor: the video's, when the clip's neighbours are clamped to its
        ends alone); ``batch`` frames go through the refiner at once. Only the frames a batch reads are
        inverted, so memory follows ``batch``, not the segment."""
        length = clip.shape[0]
        whole = isinstance(stains, torch.Tensor)
        segments: dict[tuple[int, int], list[int]] = {}
        for c in centres:
            segments.setdefault((0, length) if whole else self.segment(int(c), length), []).append(int(c))
        if whole:
            stains = {(0, length): stains}
        out = []
        for (start, stop), wanted in segments.items():
            known = None if stains is None else stains[start, stop][None].to(clip)
            _, opacity, offset, tint = self.stain_of(clip[None, start:stop], known)
            local = np.asarray(wanted) - start
            for i in range(0, len(local), batch):
                idx = neighbour_indices(local[i : i + batch], self.context_frames, stop - start) + start
                n = len(idx)
                inverted = invert_blend(clip[torch.as_tensor(idx, device=clip.device)], opacity[:, None],
                                        offset[:, None], self.min_gain)
                out.append(self.refine(inverted, opacity.expand(n, -1, -1, -1),
                                       tint.expand(n, -1, -1, -1)).clamp_(0, 1))
        return torch.cat(out)
