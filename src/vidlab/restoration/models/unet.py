"""A 2D U-Net applied per frame; with ``context_frames > 1`` it sees k stained neighbours (early fusion).

:class:`ConvUNet` is the plain encoder-decoder (any channels in and out); :class:`UNet` is the frame
restorer built on it, and the blend-aware model (:mod:`vidlab.restoration.models.blend`) uses two of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidlab.restoration.nets import MODELS, ModelConfig, RestorationNet, TrainingOutput, neighbour_indices
from vidlab.schema import at_least, one_of, require


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none"), _norm(norm, cout), nn.ReLU(inplace=True),
        )


class ConvUNet(nn.Module):
    """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``. Any H, W: padded to a multiple of
    ``2**depth`` by edge replication, cropped back."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, base_channels: int, norm: str):
        super().__init__()
        self.depth = depth
        # Receptive-field radius: 7 * 2**depth - 5 pixels (two 3x3 convs per level down and up, plus
        # pooling offsets; tests/restoration/test_restore.py measures it), rounded up to 7 * 2**depth.
        self.halo = 7 * 2**depth
        cin = in_channels
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        for w in widths:
            self.down.append(_DoubleConv(cin, w, norm))
            cin = w
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.fuse.append(_DoubleConv(2 * w, w, norm))
            cin = w
        self.head = nn.Conv2d(cin, out_channels, 1)

    @property
    def size_multiple(self) -> int:
        """Each level halves the frame. Derived, not stored: a model pickled before it existed has it too."""
        return 2**self.depth

    @property
    def tileable(self) -> bool:
        """Group and instance norms pool over the whole frame: such a net's output depends on all of it."""
        return not any(isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d)) for m in self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = self.size_multiple
        x = F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)[:, :, :h, :w]


@dataclass
class ConvUNetConfig(ModelConfig):
    """A model built on :class:`ConvUNet`: its levels, first width and norm."""

    depth: int
    base_channels: int
    norm: str

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.depth <= 6, f"depth must be in [1, 6] (got {self.depth})")
        at_least(1, self, "base_channels")
        one_of(self, "norm", "batch", "group", "instance", "none")


@dataclass
class UNetConfig(ConvUNetConfig):
    mask_channel: bool
    residual: bool


@MODELS.register("unet_temporal", UNetConfig, "The U-Net fed k neighbouring stained frames (early fusion).")
@MODELS.register("unet", UNetConfig)
class UNet(ConvUNet, RestorationNet):
    """A 2D U-Net that restores each frame on its own.

    Input ``(B, k, 3, H, W)`` stained frames in [0, 1] (plus an optional ``(B, 1, H, W)`` mask);
    output ``(B, 3, H, W)``, the restored centre frame."""

    def __init__(self, context_frames: int, depth: int, base_channels: int, norm: str, mask_channel: bool,
                 residual: bool):
        super().__init__(3 * context_frames + int(mask_channel), 3, depth, base_channels, norm)
        self.context_frames, self.mask_channel, self.residual = context_frames, mask_channel, residual

    def forward(self, stained: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, k, c, h, w = stained.shape
        if k != self.context_frames:
            raise ValueError(f"model expects {self.context_frames} frames per sample, got {k}")
        x = stained.reshape(b, k * c, h, w)
        if self.mask_channel:
            if mask is None:
                raise ValueError("this model was trained with a mask input channel: pass the stain mask")
            x = torch.cat([x, mask], dim=1)
        out = super().forward(x)
        if self.residual:
            out = out + stained[:, k // 2]
        return out

    def training_output(self, batch: dict[str, torch.Tensor]) -> TrainingOutput:
        mask = batch["mask"]
        return TrainingOutput(self(batch["stained"], mask if self.mask_channel else None), batch["clean"], mask, {})

    def restore(self, clip: torch.Tensor, centres: np.ndarray, batch: int, mask: torch.Tensor | None = None,
                stains: dict[tuple[int, int], torch.Tensor] | None = None) -> torch.Tensor:
        t, out = clip.shape[0], []
        for start in range(0, len(centres), batch):
            idx = neighbour_indices(centres[start : start + batch], self.context_frames, t)
            stacks = clip[torch.as_tensor(idx, device=clip.device)]
            m = (None if mask is None or not self.mask_channel
                 else mask.reshape(1, 1, *mask.shape[-2:]).expand(len(idx), -1, -1, -1))
            out.append(self(stacks, m))
        return torch.cat(out).clamp(0, 1)
