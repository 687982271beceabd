"""The blend-aware model: stain segments, pass-through outside the stain, receptive field, learning."""

import numpy as np
import pytest
import torch

from vidlab.restoration.corruption import CircularStain
from vidlab.restoration.metrics import clip_metrics
from vidlab.restoration.models.blend import BlendUNet, clip_statistics, invert_blend


def _net(**kw) -> BlendUNet:
    return BlendUNet(**{"window": 4, "context_frames": 1, "depth": 2, "base_channels": 4, "norm": "none",
                        "min_gain": 0.02, **kw})


def test_segments_are_window_aligned_and_a_short_tail_reads_the_window_before():
    net = _net()
    assert [net.segment(i, 11) for i in (0, 3, 4, 7, 8, 10)] == [(0, 4), (0, 4), (4, 8), (4, 8), (7, 11), (7, 11)]
    assert net.segment(2, 3) == (0, 3)  # a stream shorter than the window is one segment


def test_statistics_and_inverse_follow_the_blend():
    clip = torch.rand(2, 5, 3, 8, 8)
    stats = clip_statistics(clip)
    assert stats.shape == (2, 12, 8, 8)
    torch.testing.assert_close(stats[:, 6:9], clip.mean(1))
    opacity, tint = torch.rand(2, 1, 1, 8, 8) * 0.9, torch.rand(2, 1, 3, 8, 8)
    stained = clip * (1 - opacity) + tint * opacity
    torch.testing.assert_close(invert_blend(stained, opacity, tint * opacity, 0.02), clip, atol=1e-4, rtol=0)


def test_pixels_the_model_finds_unstained_pass_through_unchanged():
    net = _net(context_frames=3).eval()
    with torch.no_grad():
        net.estimator.head.bias[0] = -40.0  # opacity ~ 0 everywhere
    clip = torch.rand(9, 3, 20, 28)
    torch.testing.assert_close(net.restore(clip, np.arange(9), batch=4), clip, atol=1e-5, rtol=0)


def test_training_step_reaches_both_u_nets():
    net = _net(context_frames=3)
    frames, inverted, logits = net(torch.rand(2, 4, 3, 16, 16), torch.tensor([[0, 3], [1, 2]]))
    assert frames.shape == inverted.shape == (2, 2, 3, 16, 16) and logits.shape == (2, 1, 16, 16)
    (frames.mean() + logits.mean()).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("depth", [1, 2])
def test_halo_covers_the_receptive_field(depth: int):
    net = _net(depth=depth, base_channels=2).eval()
    for p in net.parameters():
        torch.nn.init.uniform_(p, 0.01, 0.1)  # positive weights: no gradient cancels by chance
    size = 2 * net.halo + 24
    clip = torch.rand(1, 4, 3, size, size, requires_grad=True)
    centre = size // 2
    frames = net(clip, torch.tensor([[1]])).frames
    frames[0, 0, :, centre, centre].sum().backward()
    rows, cols = torch.nonzero(clip.grad[0].abs().sum((0, 1)), as_tuple=True)
    radius = max(abs(int(v) - centre) for v in (rows.min(), rows.max(), cols.min(), cols.max()))
    assert 7 * 2**depth < radius <= net.halo  # wider than one U-Net: the refiner reads the estimate around it


def _textured_clips(rng: np.random.Generator, n: int, frames: int = 4,
                    size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-black footage (panning random textures) with a random circular stain per clip."""
    stained, clean, masks = [], [], []
    stain = CircularStain(radius=10, opacity=1.0, hardness=0.8, tint=0.3)
    for _ in range(n):
        base = np.kron(rng.integers(30, 240, (size // 4 + frames, size // 4 + frames, 3)),
                       np.ones((4, 4, 1))).astype(np.uint8)
        step = rng.integers(1, 3)
        video = np.stack([base[t * step : t * step + size, t * step : t * step + size] for t in range(frames)])
        sample = stain.sample(rng, size, size)
        clean.append(video)
        stained.append(sample.apply(video))
        masks.append(sample.mask)
    as_float = lambda x: torch.from_numpy(np.stack(x)).permute(0, 1, 4, 2, 3).float() / 255  # noqa: E731
    return as_float(stained), as_float(clean), torch.from_numpy(np.stack(masks))[:, None]


def test_learns_to_remove_a_stain_from_non_black_footage():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = _net(depth=2, base_channels=8)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    centres = torch.arange(4).repeat(4, 1)
    for _ in range(150):
        stained, clean, mask = _textured_clips(rng, 4)
        frames, inverted, logits = net(stained, centres)
        weight = 1 + 4 * mask[:, None]
        loss = (weight * (frames - clean).abs()).mean() / weight.mean()
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logits, mask)
        loss = loss + ((1 - mask[:, None]) * (inverted - clean).abs()).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    gains = []
    for stained, clean, mask in zip(*_textured_clips(np.random.default_rng(99), 6)):
        restored = net.restore(stained, np.arange(4), batch=4)
        before, after = (clip_metrics(x, clean, mask)["psnr_stain"] for x in (stained, restored))
        gains.append(after - before)
    # untrained, the model makes the stain worse (-2.4 dB: its opacity starts near 0.5)
    assert np.mean(gains) > 3, gains
