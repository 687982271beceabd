import math

import pytest
import torch

from vidlab.restoration.config import METRICS
from vidlab.restoration.metrics import clip_metrics, flicker, psnr, ssim
from vidlab.restoration.models.unet import UNet
from vidlab.restoration.smoothing import EmaSmoothing, MaskedSmoothing, NoSmoothing, WindowSmoothing


@pytest.mark.parametrize("size", [(72, 128), (71, 129), (33, 17)])
@pytest.mark.parametrize("frames,mask", [(1, False), (3, True)])
def test_unet_any_frame_size(size, frames, mask):
    net = UNet(context_frames=frames, depth=3, base_channels=4, norm="batch", mask_channel=mask, residual=True).eval()
    x = torch.rand(2, frames, 3, *size)
    out = net(x, torch.rand(2, 1, *size) if mask else None)
    assert out.shape == (2, 3, *size)


def test_unet_residual_starts_near_identity_and_learns():
    torch.manual_seed(0)
    net = UNet(context_frames=1, depth=2, base_channels=8, norm="batch", mask_channel=False, residual=True)
    x = torch.rand(4, 1, 3, 24, 40)
    target = x[:, 0].clamp(0.2, 0.8)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = (net(x) - target).abs().mean()
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 2


def _clip(t=6, seed=0):
    return torch.rand(t, 3, 10, 12, generator=torch.Generator().manual_seed(seed))


def test_none_is_identity():
    clip = _clip()
    assert torch.equal(NoSmoothing()(clip, clip), clip)


@pytest.mark.parametrize("smoother", [EmaSmoothing(0.3), WindowSmoothing(5, "gaussian", 1.0),
                                      WindowSmoothing(3, "box", 1.0)])
def test_constant_stays_constant(smoother):
    clip = torch.full((7, 3, 4, 5), 0.42)
    torch.testing.assert_close(smoother(clip, clip), clip)


def test_ema_recursion_and_window_has_no_lag():
    clip = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1)
    ema = EmaSmoothing(0.5)(clip, clip).flatten().tolist()
    assert ema == [0.0, 0.5, 1.25, 2.125, 3.0625]
    window = WindowSmoothing(3, "box", 1.0)(clip, clip).flatten()
    torch.testing.assert_close(window[1:-1], clip.flatten()[1:-1])  # a linear ramp is unchanged: no lag


def test_masked_leaves_unchanged_pixels_untouched():
    stained = _clip(8, 1)
    restored = stained.clone()
    restored[:, :, 3:7, 4:9] = _clip(8, 2)[:, :, 3:7, 4:9]  # the restoration changed only this box
    out = MaskedSmoothing(5, 1.5, 0.5, 0.02)(restored, stained)
    outside = torch.ones(10, 12, dtype=torch.bool)
    outside[3:7, 4:9] = False
    assert torch.equal(out[:, :, outside], restored[:, :, outside])
    assert not torch.equal(out[:, :, 3:7, 4:9], restored[:, :, 3:7, 4:9])
    assert (flicker(out[:, :, 3:7, 4:9], torch.zeros(8, 3, 4, 5))
            < flicker(restored[:, :, 3:7, 4:9], torch.zeros(8, 3, 4, 5)))


def test_masked_preserves_large_temporal_edges():
    clip = torch.zeros(6, 3, 2, 2)
    clip[3:] = 1.0  # a digit arrives: a real change, not flicker
    out = MaskedSmoothing(5, 1.5, 0.05, 0.0)(clip, torch.full_like(clip, 0.5))
    torch.testing.assert_close(out, clip, atol=1e-6, rtol=0)


def test_psnr_hand_computed():
    pred, target = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    pred[0, :, 0, 0] = 0.5  # MSE = 0.25 * 3 / 12
    assert psnr(pred, target) == pytest.approx(10 * math.log10(1 / (0.25 / 4)))
    where = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    where[0, 0, 0, 0] = True
    assert psnr(pred, target, where) == pytest.approx(10 * math.log10(4))
    assert math.isnan(psnr(pred, target, torch.zeros_like(where)))


def test_ssim_hand_computed():
    a = torch.full((1, 3, 16, 16), 0.2)
    b = torch.full((1, 3, 16, 16), 0.6)
    c1 = 0.01**2
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-5)


def test_flicker_hand_computed_and_clip_metrics():
    clean = torch.zeros(3, 3, 2, 2)
    out = clean.clone()
    out[1] = 0.3  # jumps up then back: |0.3| and |-0.3| everywhere
    assert flicker(out, clean) == pytest.approx(0.3)
    assert flicker(clean + 0.1, clean) == pytest.approx(0.0, abs=1e-7)  # a constant offset is not flicker
    mask = torch.zeros(1, 2, 2)
    mask[0, 0, 0] = 0.9
    clean[:, :, 0, 0] = 1.0  # content inside the stain
    metrics = clip_metrics(out, clean, mask)
    assert sorted(metrics) == sorted(METRICS)  # the names the config checks optimized_metric against
    assert metrics["psnr_content_stain"] == pytest.approx(psnr(out[:, :, :1, :1], clean[:, :, :1, :1]))
    assert metrics["flicker_stain"] == pytest.approx(0.3)
