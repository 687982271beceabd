import numpy as np
import pytest

from vidlab.corruption import apply_stain, circular_stain_mask
from vidlab.restoration.corruption import CORRUPTIONS, CircularStain, NoStain


# The notebook's code, verbatim apart from the random centre (passed in to compare on a fixed one).
def notebook_stain(h, w, cx, cy, radius=25, opacity=1, hardness=0.8):
    y, x = np.ogrid[:h, :w]
    dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    norm = dist / radius
    mask = np.clip(1 - norm, 0, 1) ** hardness
    mask = mask * opacity
    return mask[..., None]


def notebook_apply(frames, stain_mask):
    stained = []
    for frame in frames:
        frame_f = frame / 255.0
        stain = np.ones_like(frame_f) * stain_mask
        corrupted = frame_f * (1 - stain_mask) + (0.3 * stain)
        corrupted = np.clip(corrupted, 0, 1)
        stained.append((corrupted * 255).astype(np.uint8))
    return np.array(stained)


@pytest.mark.parametrize("center,radius,opacity,hardness", [((40, 30), 25, 1.0, 0.8), ((64, 36), 12, 0.7, 2.0)])
def test_mask_matches_notebook_formula(center, radius, opacity, hardness):
    ours = circular_stain_mask(72, 128, center, radius, opacity, hardness)
    ref = notebook_stain(72, 128, *center, radius, opacity, hardness)[..., 0]
    assert ours.dtype == np.float32 and ours.shape == (72, 128)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    assert ours[center[1], center[0]] == pytest.approx(opacity)
    assert ours[0, 0] == 0


def test_apply_stain_bit_identical_to_notebook():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (5, 72, 128, 3), dtype=np.uint8)
    mask = circular_stain_mask(72, 128, (50, 33), 25)
    np.testing.assert_array_equal(apply_stain(frames, mask), notebook_apply(frames, mask.astype(np.float64)[..., None]))


def test_random_centre_fits_and_is_seeded():
    masks = [circular_stain_mask(72, 128, None, 25, rng=np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(*masks)
    for seed in range(30):
        mask = circular_stain_mask(72, 128, None, 25, rng=np.random.default_rng(seed))
        cy, cx = np.unravel_index(mask.argmax(), mask.shape)
        assert 25 <= cx < 128 - 25 and 25 <= cy < 72 - 25


@pytest.mark.parametrize(
    "kwargs,message",
    [({"radius": 40}, "does not fit"), ({"opacity": 1.5}, "opacity"), ({"hardness": 0.0}, "hardness")],
)
def test_invalid_parameters_rejected(kwargs, message):
    params = {"radius": 25, "opacity": 1.0, "hardness": 0.8} | kwargs
    with pytest.raises(ValueError, match=message):
        circular_stain_mask(72, 128, None, rng=np.random.default_rng(0), **params)


def test_multi_stain_is_valid_and_deterministic():
    corruption = CORRUPTIONS.build(CORRUPTIONS.from_conf("multi_stain", min_stains=2))
    a = corruption.sample(np.random.default_rng(1), 72, 128)
    b = corruption.sample(np.random.default_rng(1), 72, 128)
    assert 2 <= len(a.layers) <= 3
    assert 0 <= a.mask.min() and a.mask.max() <= 1
    frames = np.full((2, 72, 128, 3), 200, np.uint8)
    np.testing.assert_array_equal(a.apply(frames), b.apply(frames))
    assert (a.apply(frames) != frames).any()
    tints = {layer.tint for layer in a.layers}
    assert all(len(t) == 3 for t in tints)


def test_circular_stain_object_uses_notebook_blend_and_none_is_identity():
    stain = CircularStain(25, 1.0, 0.8, 0.3).sample(np.random.default_rng(0), 72, 128)
    frames = np.random.default_rng(0).integers(0, 256, (3, 72, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(stain.apply(frames), notebook_apply(frames, stain.mask.astype(np.float64)[..., None]))
    clean = NoStain().sample(np.random.default_rng(0), 72, 128)
    np.testing.assert_array_equal(clean.apply(frames), frames)
    assert clean.mask.max() == 0
    assert isinstance(CORRUPTIONS.build(CORRUPTIONS.from_conf("circular_stain")), CircularStain)
