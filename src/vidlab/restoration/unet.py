"""A 2D U-Net applied per frame; with ``context_frames > 1`` it sees k stained neighbours (early fusion)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class UNet(nn.Module):
    """Input ``(B, k, 3, H, W)`` stained frames in [0, 1] (plus an optional ``(B, 1, H, W)`` mask);
    output ``(B, 3, H, W)``, the restored centre frame. Any H, W: padded to a multiple of
    ``2**depth`` by edge replication, cropped back."""

    def __init__(self, context_frames: int, depth: int, base_channels: int, norm: str, mask_channel: bool, residual: bool):
        super().__init__()
        self.context_frames, self.depth, self.mask_channel, self.residual = context_frames, depth, mask_channel, residual
        cin = 3 * context_frames + int(mask_channel)
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
        self.head = nn.Conv2d(cin, 3, 1)

    def forward(self, stained: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, k, c, h, w = stained.shape
        if k != self.context_frames:
            raise ValueError(f"model expects {self.context_frames} frames per sample, got {k}")
        x = stained.reshape(b, k * c, h, w)
        if self.mask_channel:
            if mask is None:
                raise ValueError("this model was trained with a mask input channel: pass the stain mask")
            x = torch.cat([x, mask], dim=1)
        multiple = 2**self.depth
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        out = self.head(x)[:, :, :h, :w]
        if self.residual:
            out = out + stained[:, k // 2]
        return out
