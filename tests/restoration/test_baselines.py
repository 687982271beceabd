"""The reference restorations of every test table, against the stain's own formula."""

import numpy as np
import pytest
import torch

from vidlab.choices import choice_values
from vidlab.restoration.baselines import clip_minimum, inpaint, run_baseline, true_inverse
from vidlab.restoration.corruption import CORRUPTIONS, CircularStain


def _float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def _textured(rng: np.random.Generator, n: int = 6) -> np.ndarray:
    """Non-black footage: a smooth random texture panning, plus noise."""
    base = rng.integers(40, 230, (48 + n, 96 + n, 3)).astype(np.float32)
    frames = np.stack([base[i : i + 48, i : i + 96] for i in range(n)])
    return frames.astype(np.uint8)


def test_offset_of_one_stain_is_tint_times_mask():
    stain = CircularStain(radius=12, opacity=0.9, hardness=0.8, tint=0.3).sample(np.random.default_rng(0), 48, 96)
    np.testing.assert_allclose(stain.offset, 0.3 * stain.mask[..., None].repeat(3, -1), atol=1e-6)


@pytest.mark.parametrize("corruption", ["circular_stain", "coloured", "multi_stain"])
def test_true_inverse_undoes_the_blend_up_to_rounding(corruption: str):
    values = choice_values("corruption", "circular_stain" if corruption == "coloured" else corruption)
    if corruption == "coloured":
        values.update(radius=12, colour=[0.6, 0.2, 0.1])
        corruption = "circular_stain"
    elif corruption == "circular_stain":
        values["radius"] = 12
    else:
        values.update(radius_range=[8.0, 14.0], min_stains=3, max_stains=3)
    rng = np.random.default_rng(1)
    clean = _textured(rng)
    for seed in range(4):
        stain = CORRUPTIONS.build(CORRUPTIONS.config(values)).sample(np.random.default_rng(seed), 48, 96)
        stained = stain.apply(clean)
        opacity = torch.from_numpy(stain.mask)[None]
        restored = true_inverse(_float(stained), opacity, torch.from_numpy(stain.offset).permute(2, 0, 1))
        # uint8 rounding (< 1 level) divided by what the stain lets through, where anything does
        bound = (1 / 255) / (1 - opacity).clamp(min=1e-6) + 1e-5
        clear = (opacity < 0.95).expand(6, 3, -1, -1)
        assert ((restored - _float(clean)).abs() <= bound)[clear].all()
        assert ((_float(stained) - _float(clean)).abs() > 0.05).any()  # the stain did change something


def test_clip_minimum_is_exact_where_the_background_is_black_and_blind_to_tint():
    rng = np.random.default_rng(2)
    clean = np.zeros((8, 48, 96, 3), np.uint8)
    for t in range(8):  # a bright bar sweeping over a black background: every pixel is black in some frame
        clean[t, :, 12 * t : 12 * t + 12] = rng.integers(150, 255, 3)
    stain = CircularStain(radius=20, opacity=1.0, hardness=0.8, tint=0.3).sample(np.random.default_rng(0), 48, 96)
    restored = clip_minimum(_float(stain.apply(clean)))
    inside = torch.from_numpy(stain.mask < 0.9)
    assert (restored - _float(clean)).abs().amax(dim=(0, 1))[inside].max() < 0.1
    # another tint breaks its assumption: it is a baseline, not a method
    tinted = CircularStain(radius=20, opacity=1.0, hardness=0.8, tint=0.6).sample(np.random.default_rng(0), 48, 96)
    assert (clip_minimum(_float(tinted.apply(clean))) - _float(clean)).abs().max() > 0.2


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_inpainting_fills_only_the_hole(method: str):
    clean = _textured(np.random.default_rng(3), 3)
    stain = CircularStain(radius=12, opacity=1.0, hardness=0.8, tint=0.3).sample(np.random.default_rng(0), 48, 96)
    stained = _float(stain.apply(clean))
    opacity = torch.from_numpy(stain.mask)[None]
    filled = inpaint(stained, opacity, method)
    assert filled.shape == stained.shape
    hole = (opacity > 0.05).expand_as(filled)
    assert torch.equal(filled[~hole], stained[~hole])
    assert (filled[hole] - stained[hole]).abs().mean() > 0.02
    assert torch.equal(run_baseline(f"inpaint_{method}", stained, opacity, 0.3 * opacity.expand(3, -1, -1)), filled)
