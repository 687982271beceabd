"""``python -m vidlab.restore`` on real checkpoints (a real Lightning Trainer) and real video files:
bounded streaming that does not change the result, exact output sizes, refused formats, one-line
errors with their exit codes, and nothing left behind on failure."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from vidlab import restore
from vidlab.choices import choice_values
from vidlab.errors import ConfigError
from vidlab.restoration.loading import DEFAULT_MODEL, load_module, load_restoration
from vidlab.restoration.models.unet import UNet
from vidlab.restoration.module import RestorationModule
from vidlab.restoration.nets import MODELS
from vidlab.restoration.smoothing import SMOOTHINGS
from vidlab.restoration.stains import apply_stain, circular_stain_mask
from vidlab.restoration.streaming import Restorer, covered, plan_tiles, to_uint8
from vidlab.video import VideoReadError, count_frames, iter_frames, write_video
from vidlab.video.count import video_info

from conftest import ROOT, Outcome, benchmarks_importable, call_main, mounted_tmpfs, moving_square_frames

SMALL = {"name": "unet_temporal", "context_frames": 3, "depth": 2, "base_channels": 4}
BLEND = {"name": "blend_unet", "window": 4, "context_frames": 3, "depth": 2, "base_channels": 4,
         "stain": None}  # learned: tiles
FITTED = {**BLEND, "stain": {**choice_values("corruption", "circular_stain"), "radius": 12}}  # fits 40x56 frames
LOSS = choice_values("task", "restoration")["loss"]


def _trainer() -> L.Trainer:
    return L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)


def save_checkpoint(path: Path, model: dict) -> Path:
    """One real training step of a RestorationModule, saved by the Trainer like train.py's checkpoints."""
    module = RestorationModule(model={**choice_values("model", model["name"]), **model},
                               smoothing=choice_values("smoothing", "masked"),
                               loss=LOSS, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    g = torch.Generator().manual_seed(0)
    frames = model.get("window", model["context_frames"])
    batch = {"stained": torch.randint(0, 256, (2, frames, 3, 16, 16), dtype=torch.uint8, generator=g),
             "clean": torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g),
             "mask": torch.rand(2, 1, 16, 16, generator=g)}
    if "window" in model:  # a window model scores some frames of each window
        batch["clean"], batch["centres"] = batch["clean"][:, None].repeat(1, 2, 1, 1, 1), torch.tensor([[0, 3], [1, 2]])
    trainer = _trainer()
    trainer.fit(module, DataLoader([batch], batch_size=None))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.ckpt", SMALL)


@pytest.fixture(scope="module")
def blend_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "blend.ckpt", BLEND)


@pytest.fixture(scope="module")
def fitted_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "fitted.ckpt", FITTED)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "in" / "stained clip.mp4", moving_square_frames(12), fps=10)


def write_mpeg4(path: Path, frames: np.ndarray, fps: int = 10, rotation: int = 0) -> Path:
    """MPEG-4 part 2 through PyAV, which (unlike OpenCV's writer) keeps odd sizes; ``rotation``
    (degrees counter-clockwise) is written as a display matrix, as a phone does."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def run_restore(*args: str | Path) -> subprocess.CompletedProcess:
    """``python -m vidlab.restore <args>`` in a process of its own: exit codes as a shell sees them."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "vidlab.restore", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)


def restore_here(*args: str | Path) -> Outcome:
    """``python -m vidlab.restore <args>`` in this process: the same ``main``, its exit code and output."""
    return call_main(lambda: restore.main([str(a) for a in args]))


def snapshot(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- the command
def test_cli_restores_with_progress_and_summary(checkpoint: Path, video: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    proc = restore_here(checkpoint, video, out / "restored.mkv", "--side-by-side", out / "pair.avi",
                        "--megapixels", "0.02")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"restored 12 frames in [\d.]+ s \([\d.]+ frames/s\) -> .*restored\.mkv\n", proc.stdout)
    assert "restoring" in proc.stderr and "12/12" in proc.stderr and "frame/s" in proc.stderr  # tqdm bar
    assert snapshot(out) == ["pair.avi", "restored.mkv"]  # no temporary left
    assert count_frames(out / "restored.mkv") == count_frames(out / "pair.avi") == 12
    assert next(iter_frames(out / "restored.mkv")).shape == (40, 56, 3)
    assert next(iter_frames(out / "pair.avi")).shape == (18 + 40, 2 * 56 + 2, 3)


@pytest.mark.parametrize("suffix,codec", [(".mp4", "h264"), (".mkv", "h264"), (".avi", "h264"), (".mkv", "ffv1")])
def test_odd_size_round_trip(checkpoint: Path, tmp_path: Path, suffix: str, codec: str):
    stained = moving_square_frames(9, 33, 47)
    source = write_mpeg4(tmp_path / "odd.mp4", stained)
    assert video_info(source).width == 47
    n = restore.restore_video(checkpoint, source, tmp_path / f"restored{suffix}", codec=codec)
    decoded = np.stack(list(iter_frames(tmp_path / f"restored{suffix}")))
    assert n == 9 and decoded.shape == (9, 33, 47, 3)
    probe = video_info(tmp_path / f"restored{suffix}")
    assert (probe.width, probe.height, probe.n_frames, probe.fps) == (47, 33, 9, 10.0)
    # what was written is the restoration (H.264 at crf 18 is close to lossless here), by the model as
    # the command loads it (channels-last: other convolution kernels, another float rounding)
    model = restore._load_model(checkpoint, None, "cpu", video_info(source))
    expected = np.stack([r for _, r in Restorer(model, SMOOTHINGS.build(
        SMOOTHINGS.from_conf("masked")))(iter_frames(source))])
    assert np.abs(decoded.astype(int) - expected).mean() < 2
    if codec == "ffv1":  # lossless: the restored frames bit for bit; and only in Matroska
        assert np.array_equal(decoded, expected)
        refused = restore_here(checkpoint, source, tmp_path / "lossless.mp4", "--codec", "ffv1")
        assert refused.returncode == 2 and refused.stderr.strip() == (
            f"error: cannot write lossless FFV1 to {tmp_path / 'lossless.mp4'}: use .mkv")


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_a_phone_video_shows_as_its_input(checkpoint: Path, tmp_path: Path, codec: str):
    """A portrait phone video, stored sideways (landscape) with a display matrix that turns it a
    quarter clockwise ("rotate=90"), is restored upright: the model is given what a player shows, and
    the output, written upright without a rotation, shows as the input does (in OpenCV, which applies
    the rotation as players do, too)."""
    source = write_mpeg4(tmp_path / "phone.mp4", moving_square_frames(12, 40, 56), rotation=-90)  # 40 rows, 56 columns
    with av.open(str(source)) as container:  # PyAV's own frames, as stored (it applies no display matrix)
        stored = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    shown = np.rot90(stored, -1, axes=(1, 2))  # a quarter turn clockwise: 56 rows, 40 columns
    before = video_info(source)
    assert (before.width, before.height, before.rotation) == (40, 56, -90)
    proc = restore_here(checkpoint, source, tmp_path / "restored.mp4", "--side-by-side", tmp_path / "pair.mp4",
                        "--codec", codec)
    assert proc.returncode == 0, proc.stderr
    after = video_info(tmp_path / "restored.mp4")
    assert (after.width, after.height, after.rotation, after.n_frames) == (40, 56, 0, 12)
    for path in (source, tmp_path / "restored.mp4"):  # a player's view: OpenCV applies the display matrix
        capture = cv2.VideoCapture(str(path))
        assert capture.read()[1].shape == (56, 40, 3), path
        capture.release()
    # The preview's input half is what the restorer was given: the upright picture. Both outputs hold
    # what restoring that gives, up to the codec's loss (a few levels; a half turn is ~25 off).
    expected = np.stack([r for _, r in Restorer(load_module(checkpoint), SMOOTHINGS.build(
        SMOOTHINGS.from_conf("masked")))(iter(shown))])
    restored = np.stack(list(iter_frames(tmp_path / "restored.mp4")))
    pair = np.stack(list(iter_frames(tmp_path / "pair.mp4")))
    assert restored.shape == (12, 56, 40, 3) and pair.shape == (12, 18 + 56, 2 * 40 + 2, 3)
    for got, want in [(pair[:, 18:, :40], shown), (pair[:, 18:, 42:], expected), (restored, expected)]:
        assert np.abs(got.astype(int) - want).mean() < 3


# ---------------------------------------------------------------- streaming does not change the result
@pytest.mark.parametrize("smoothing", ["none", "ema", "window", "masked"])
@pytest.mark.parametrize("model", ["unet_temporal", "blend_unet", "blend_unet_fitted"])
def test_result_does_not_depend_on_the_budget(checkpoint: Path, blend_checkpoint: Path, fitted_checkpoint: Path,
                                              smoothing: str, model: str):
    module = load_module(
        {"blend_unet": blend_checkpoint, "blend_unet_fitted": fitted_checkpoint}.get(model, checkpoint))
    smoother = SMOOTHINGS.build(SMOOTHINGS.from_conf(smoothing))
    frames = list(moving_square_frames(11, 40, 56)
                  + np.random.default_rng(0).integers(0, 20, (11, 40, 56, 3), np.uint8))
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    whole = to_uint8(smoother(module.restore_clip(clip), clip))  # the whole video at once
    # One block; blocks of 4; of 1. The blend model's blocks hold whole 4-frame windows (one block;
    # blocks of 8; of 4), and its last segment (frames 7-10) overlaps the one before.
    small_budget = 0.02 if model.startswith("blend_unet") else 0.01
    for megapixels, chunk in [(1.0, None), (small_budget, None), (1.0, 1)]:
        got = np.stack([r for _, r in Restorer(module, smoother, megapixels, chunk)(iter(frames))])
        differ = got != whole
        # identical up to float rounding of different batch shapes: a rare 1-level step in uint8
        assert np.abs(got.astype(int) - whole).max() <= 1 and differ.mean() < 1e-3, (megapixels, chunk, differ.sum())


@pytest.mark.parametrize("model", [*MODELS.names(), "blend_unet_fitted"])
def test_restore_loads_every_model_as_training_does(tmp_path: Path, model: str):
    """Every registered model (and the blend model that fits its stain), from a real checkpoint:
    :func:`load_restoration` (restore's, without Lightning) gives the training module's net and
    smoothing, the same restoration bit for bit of a stained clip and of a clean one."""
    settings = ({"blend_unet": BLEND, "blend_unet_fitted": FITTED}.get(model)  # the stain learned, fitted
                or {**choice_values("model", model), "depth": 2, "base_channels": 4})
    checkpoint = save_checkpoint(tmp_path / "model.ckpt", settings)
    module, lean = load_module(checkpoint), load_restoration(checkpoint)
    assert type(lean.net) is type(module.net) and type(lean.smoother) is type(module.smoother)
    torch.testing.assert_close(vars(lean.smoother), vars(module.smoother), rtol=0, atol=0)
    clean = moving_square_frames(8, 40, 56)
    stained = apply_stain(clean, circular_stain_mask(40, 56, (28, 20), 12))
    for frames in (stained, clean):
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            expected = module.restore_clip(clip)
            torch.testing.assert_close(lean.net.restore(clip, np.arange(len(clip)), 16), expected, rtol=0, atol=0)


@pytest.mark.parametrize("smoothing", ["none", "masked"])
def test_a_video_stain_streams_frame_by_frame_with_the_result_of_the_whole_clip(fitted_checkpoint: Path,
                                                                              smoothing: str):
    """With one stain for the whole video (what restore and evaluate find first), blocks hold the
    budget's frames and their neighbours, not whole windows (memory follows the budget at any frame
    size), and each frame is what restoring the clip at once with that stain gives: its neighbours
    clamped to the video's ends alone."""
    module = load_module(fitted_checkpoint)
    smoother = SMOOTHINGS.build(SMOOTHINGS.from_conf(smoothing))
    frames = list(moving_square_frames(11, 40, 56)
                  + np.random.default_rng(1).integers(0, 20, (11, 40, 56, 3), np.uint8))
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    found = module.net.find_video_stain(frames, module.net.window, module.device)
    whole = to_uint8(smoother(module.restore_clip(clip, stains=found.blend), clip))
    for megapixels, chunk in [(1.0, None), (0.004, None), (1.0, 1)]:  # one block; tiles; one frame a block
        restorer = Restorer(module, smoother, megapixels, chunk, stain_sample=frames)
        got = np.stack([r for _, r in restorer(iter(frames))])
        assert np.abs(got.astype(int) - whole).max() <= 1 and (got != whole).mean() < 1e-3, (megapixels, chunk)


def _panned_photograph(frames: int, h: int, w: int) -> np.ndarray:
    """A real photograph (matplotlib's Grace Hopper) seen through a window panning across it."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        image = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    return np.stack([image[100 + t : 100 + t + h, 80 + 4 * t : 80 + 4 * t + w] for t in range(frames)])


@pytest.mark.parametrize("smoothing", ["none", "ema", "window", "masked"])
def test_only_the_stain_goes_through_the_model_and_a_clean_video_never_does(fitted_checkpoint: Path,
                                                                          smoothing: str):
    """Once the video's stain is found, the model restores the tiles covering it alone (a pixel the stain
    does not reach is its own restoration): each frame is what restoring the whole clip with that stain
    gives, whatever the smoothing (ema and window change pixels far from the stain too). A clean video
    has no tile: it never reaches the model and comes back bit for bit."""
    module = load_module(fitted_checkpoint)
    smoother = SMOOTHINGS.build(SMOOTHINGS.from_conf(smoothing))
    clean = _panned_photograph(9, 96, 192)
    mask = circular_stain_mask(96, 192, (140, 40), FITTED["stain"]["radius"])
    frames = list(apply_stain(clean, mask))
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    found = module.net.find_video_stain(frames, module.net.window, module.device)
    assert found.estimate.layers[0].centre == (140, 40)
    whole = to_uint8(smoother(module.restore_clip(clip, stains=found.blend), clip))
    # one tile; strips of the box; squares (each plan once, with the smoothing that reads most frames)
    plans = ((1.0, 1), (0.005, 6), (0.004, 36)) if smoothing == "window" else ((0.004, 36),)
    for megapixels, count in plans:
        restorer = Restorer(module, smoother, megapixels, stain_sample=frames)
        tiles = restorer.tiles(96, 192)
        rows, cols = covered(tiles)
        assert len(tiles) == count and rows.stop - rows.start < 48 and cols.stop - cols.start < 48  # the disc's
        got = np.stack([r for _, r in restorer(iter(frames))])
        assert np.abs(got.astype(int) - whole).max() <= 1 and (got != whole).mean() < 1e-3, megapixels
    restorer = Restorer(module, smoother, stain_sample=list(clean))
    assert restorer.video_stain.estimate.hypothesis == "none" and restorer.tiles(96, 192) == []
    got = np.stack([r for _, r in restorer(iter(clean))])
    assert np.array_equal(got, to_uint8(smoother(torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255,
                                                 torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255)))


@pytest.mark.parametrize(("model", "size", "budgets"), [
    (SMALL, (40, 56), ((0.0016, 20), (0.002, 7))),  # (megapixels, tiles): square tiles, then full-width strips
    (BLEND, (100, 140), ((0.006, 35), (0.01, 8))),  # two U-Nets in a row: a halo twice as wide
    (FITTED, (100, 140), ((0.004, 15), (0.008, 4))),  # the stain found on the whole frame, then the repair in tiles
])
def test_tiles_restore_frames_as_a_whole(tmp_path: Path, model: dict, size: tuple[int, int], budgets: tuple):
    module = load_module(save_checkpoint(tmp_path / "d1.ckpt", {**model, "depth": 1}))
    smoother = SMOOTHINGS.build(SMOOTHINGS.from_conf("window"))
    frames = list(moving_square_frames(5, *size))
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    whole = to_uint8(smoother(module.restore_clip(clip), clip))
    for megapixels, tiles in budgets:
        restorer = Restorer(module, smoother, megapixels)
        assert len(plan_tiles(*size, restorer.pixels, restorer.multiple, restorer.halo)) == tiles
        got = np.stack([r for _, r in restorer(iter(frames))])
        assert np.abs(got.astype(int) - whole).max() <= 1 and (got != whole).mean() < 1e-3


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_halo_covers_the_receptive_field(depth: int):
    net = UNet(context_frames=1, depth=depth, base_channels=2, norm="none", mask_channel=False, residual=True).eval()
    for p in net.parameters():
        torch.nn.init.uniform_(p, 0.01, 0.1)  # positive weights: no gradient cancels by chance
    size, radius = 16 * 2**depth + 32, 0
    for offset in range(2**depth):  # every phase of the pooling grid
        x = torch.rand(1, 1, 3, size, size, requires_grad=True)
        centre = size // 2 + offset
        net(x)[0, :, centre, centre].sum().backward()
        rows, cols = torch.nonzero(x.grad[0, 0].abs().sum(0), as_tuple=True)
        radius = max(radius, *(abs(v - centre) for v in (rows.min(), rows.max(), cols.min(), cols.max())))
    module = RestorationModule(model={**choice_values("model", "unet_temporal"), **SMALL, "depth": depth},
                               smoothing=choice_values("smoothing", "none"), loss=LOSS)
    assert radius <= Restorer(module, SMOOTHINGS.build(SMOOTHINGS.from_conf("none"))).halo


def test_the_memory_benchmark_measures_each_step_beside_the_floor(tmp_path: Path, capsys: pytest.CaptureFixture):
    """``benchmarks/restore_phases.py`` shrunk as a user trying it would (one small size, 8 frames): a
    row per size with the peak of each step of a fresh restore and of the same video only copied,
    which holds no model; each process is fresh, which is the point (a peak is per process). About
    15 s: two processes that import torch."""
    with benchmarks_importable():
        import restore_phases
    source = write_video(tmp_path / "source.mp4", moving_square_frames(8, 120, 160), fps=10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["restore_phases.py", str(source), "--sizes", "160x120", "--frames", "8"])
        restore_phases.main()
    row = capsys.readouterr().out.strip().splitlines()[-1]
    loaded, finding, restoring, floor = map(float, re.findall(r"([\d.]+) GB", row))
    assert row.startswith("| 160x120 |") and all(0.1 < peak < 3 for peak in (loaded, finding, restoring, floor))
    assert loaded < restoring  # restoring holds the model, its activations and the codecs


def test_restoring_from_a_checkpoint_file_imports_neither_lightning_nor_mlflow(checkpoint: Path, video: Path,
                                                                                tmp_path: Path):
    """A fresh ``python -m vidlab.restore`` process (its imports are the point), with a checkpoint file
    and ``--side-by-side``: MLflow, which only ``runs:/`` and ``models:/`` references need, and
    Lightning, which only training needs, are never imported (0.1 GB and 0.28 GB, and seconds;
    restore's peak memory is docs/benchmarks.md's)."""
    outputs = [str(tmp_path / "restored.mkv"), "--codec", "ffv1", "--side-by-side", str(tmp_path / "pair.mkv")]
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vidlab.restore", str(checkpoint), str(video),
                           *outputs], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    training = ("mlflow", "lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics")
    assert "torch" in imported and not {name for name in imported if name.split(".")[0] in training}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_command_non_zero_and_leaves_nothing(checkpoint: Path, tmp_path: Path, signum: int):
    """``python -m vidlab.restore`` stopped by SIGTERM (143) or Ctrl-C (130) mid-video, as a shell sees
    it: the temporary outputs are removed, nothing is left under the output's name."""
    frames = np.repeat(moving_square_frames(12, 120, 160), 50, axis=0)  # 600 frames: seconds of work
    source = write_video(tmp_path / "long.mp4", frames, fps=24)
    out = tmp_path / "out"
    out.mkdir()
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vidlab.restore", str(checkpoint), str(source),
                                 str(out / "restored.mp4"), "--chunk", "4"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 120
        while "restoring" not in (tmp_path / "stderr.txt").read_text():  # the progress bar: frames are being restored
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr.txt").read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert snapshot(out) == []


# ---------------------------------------------------------------- refusals and errors
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save(load_module(checkpoint).state_dict(), folder / "state_dict.ckpt")
    return folder


LOADERS = [load_module, load_restoration]  # the training's module; the net and smoothing restore reads


@pytest.mark.parametrize("load", LOADERS)
def test_other_checkpoint_kinds_are_refused(tmp_path: Path, load: Callable[[Path], object]):
    # weights_only refuses pickled code, even in an otherwise well-formed checkpoint
    torch.save({"state_dict": {}, "hyper_parameters": {"model": functools.partial(print), "smoothing": {}}},
               tmp_path / "pickled_code.ckpt")
    trainer = _trainer()
    trainer.fit(BoringModel())
    trainer.save_checkpoint(tmp_path / "other_module.ckpt")
    save_checkpoint(tmp_path / "mask_model.ckpt", {**SMALL, "mask_channel": True})
    for name, match in [("pickled_code", "not a train.py checkpoint.*weights only: UnpicklingError"),
                        ("other_module", "not a train.py checkpoint"), ("mask_model", "needs the stain mask")]:
        with pytest.raises(ConfigError, match=match):
            load(tmp_path / f"{name}.ckpt")


def _assert_refused(proc: subprocess.CompletedProcess | Outcome, code: int, match: str) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == code and len(lines) == 1 and proc.stdout == "", (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: ") and re.search(match, lines[0]), lines[0]


@pytest.mark.parametrize("name", ["restored.gif", "restored.png", "restored"])
def test_refused_output_formats_before_anything_else(tmp_path: Path, name: str):
    """The command's exit 2 as a shell sees it, before torch is imported (about a second)."""
    # the input and the checkpoint do not even exist: the format is the first thing checked
    proc = run_restore(tmp_path / "missing.ckpt", tmp_path / "missing.mp4", tmp_path / name)
    _assert_refused(proc, 2, r"cannot write a video .*use \.mp4, \.mkv, \.avi")
    assert snapshot(tmp_path) == []


@pytest.mark.parametrize(("case", "match"), [
    ("missing input", "input not found"),
    ("text file as input", "unreadable video"),
    ("missing checkpoint", "checkpoint not found"),
    ("random.ckpt", "not a train.py checkpoint"),
    ("notes.ckpt", "not a train.py checkpoint"),
    ("state_dict.ckpt", "not a train.py checkpoint"),
    ("cuda", "CUDA is not available"),
    ("output folder is a file", "cannot write .*Not a directory"),
    ("missing output folder", "cannot write .*No such file or directory"),
    ("output is the input", "must be different files"),
    ("unknown run",
     "runs:/0123456789abcdef0123456789abcdef/model: no PyTorch model of vidlab in sqlite:///.*not found"),
    ("unknown registered model", "models:/stain_remover/1: no PyTorch model of vidlab in .*not found"),
    ("missing store", "no MLflow store at sqlite:///.*missing.db"),
    ("stain larger than the frame",
     "blend_unet.ckpt finds the stain it was trained on, and its radius 25 does not fit a 40x56 frame"),
])
def test_one_line_errors_with_exit_code_2(checkpoint: Path, bad_checkpoints: Path, video: Path, tmp_path: Path,
                                           case: str, match: str):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "a file").write_text("x")
    (tmp_path / "notes.mp4").write_text("not a video\n")
    ckpt, source, target, extra = checkpoint, video, out / "restored.mp4", []
    if case == "missing input":
        source = tmp_path / "missing.mp4"
    elif case == "text file as input":
        source = tmp_path / "notes.mp4"
    elif case == "missing checkpoint":
        ckpt = tmp_path / "missing.ckpt"
    elif case.endswith(".ckpt"):
        ckpt = bad_checkpoints / case
    elif case == "cuda":
        extra = ["--device", "cuda"]
    elif case == "output folder is a file":
        target = tmp_path / "a file" / "restored.mp4"
    elif case == "missing output folder":
        target = tmp_path / "nowhere" / "restored.mp4"
    elif case == "output is the input":
        target = video
    elif case == "stain larger than the frame":  # the shipped model, on a video smaller than its stain
        ckpt = DEFAULT_MODEL
    elif case in ("unknown run", "unknown registered model", "missing store"):
        store = out.parent / ("missing.db" if case == "missing store" else "store.db")
        if case != "missing store":
            MlflowClient(f"sqlite:///{store}").search_experiments()  # an existing store without that run or model
        ckpt = ("models:/stain_remover/1" if case == "unknown registered model"
                else "runs:/0123456789abcdef0123456789abcdef/model")
        extra = ["--tracking-uri", f"sqlite:///{store}"]
    before = {p: snapshot(p) for p in (tmp_path, out, video.parent)}
    _assert_refused(restore_here(ckpt, source, target, *extra), 2, match)
    assert {p: snapshot(p) for p in before} == before  # nothing written anywhere


def test_failure_while_running_is_one_line_exit_1_and_leaves_nothing(
    checkpoint: Path, video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    def failing_decoder(path):
        yield from moving_square_frames(3)
        raise VideoReadError(f"{path}: corrupt packet at frame 3")

    monkeypatch.setattr(restore, "iter_frames", failing_decoder)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        restore.main([str(checkpoint), str(video), str(out / "restored.mp4"), "--side-by-side", str(out / "pair.mp4")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: restore failed: VideoReadError: {video}: corrupt packet at frame 3")
    assert snapshot(out) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(checkpoint: Path, tmp_path: Path):
    from vidlab.video import write_video

    noise = np.random.default_rng(0).integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)  # far over 4 KiB encoded
    video = write_video(tmp_path / "noise.mp4", noise, 24)
    with mounted_tmpfs(tmp_path / "disk", "4k") as disk:
        outcome = restore_here(checkpoint, video, disk / "restored.mp4")
        left = snapshot(disk)
    assert outcome.returncode == 1
    assert outcome.stderr.strip().splitlines()[-1] == (
        f"error: no space left on {disk}: free some space and run the same command again")
    assert "Traceback" not in outcome.stderr  # the progress bar, then the one line
    assert left == []  # written under a temporary name, removed when the write failed


@pytest.mark.parametrize("codec", ["ffv1", "h264"])
def test_restore_without_a_model_uses_the_one_vidlab_ships(tmp_path: Path, codec: str):
    """``python -m vidlab.restore IN OUT``: the shipped model (weights and settings only, a few MB)
    finds the notebook's stain on footage it never saw, in a lossless video and in an H.264 one."""
    from vidlab.restoration.baselines import true_inverse
    from vidlab.restoration.corruption import CircularStain
    from vidlab.restoration.footage import render
    from vidlab.video import iter_frames, write_video

    saved = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    assert set(saved) == {"hyper_parameters", "state_dict", "vidlab_version"} and DEFAULT_MODEL.stat().st_size < 5e6
    assert (saved["hyper_parameters"]["model"]["name"] == "blend_unet"
            and saved["hyper_parameters"]["model"]["stain"]["radius"] == 25)
    clean = render(np.random.default_rng(11), 20, 72, 128)
    stain = CircularStain(radius=25, opacity=1.0, hardness=0.8, tint=0.3).sample(np.random.default_rng(4), 72, 128)
    source = write_video(tmp_path / ("stained.mkv" if codec == "ffv1" else "stained.mp4"), stain.apply(clean), 24,
                         codec=codec)
    outcome = restore_here(source, tmp_path / "restored.mkv", "--codec", "ffv1")
    assert outcome.returncode == 0, outcome.stderr
    inside = stain.mask > 0.5
    error = lambda frames: float(((np.stack(list(frames)).astype(float) - clean)[:, inside] ** 2).mean())  # noqa: E731
    stained = torch.from_numpy(np.stack(list(iter_frames(source)))).permute(0, 3, 1, 2).float() / 255
    mask = torch.from_numpy(stain.mask)
    ceiling = ((true_inverse(stained, mask[None], 0.3 * mask[None].expand(3, -1, -1)) * 255)
               .round().byte().permute(0, 2, 3, 1).numpy())
    restored = error(iter_frames(tmp_path / "restored.mkv"))
    # within 2 dB of the true stain's inverse on the same decoded frames (H.264's noise is amplified
    # by 1 / (1 - m) for both), and more than 9 dB better than the stained input
    assert restored < 1.6 * error(ceiling) and restored < 0.125 * error(iter_frames(source)), (restored, error(ceiling))


OLD = ROOT / "tests/data/checkpoints_0.2"  # written by vidlab 0.2 itself: how, in its README.md


@pytest.mark.parametrize("name", ["unet", "blend_unet_learned", "blend_unet_fitted"])
def test_checkpoints_of_0_2_restore_as_0_2_did(name: str):
    """0.2 wrote no version, ``_target_`` in every choice, and its blend model first learned its stain
    (no ``stain`` key), then fitted it; real checkpoints of each restore the clip 0.2 restored as 0.2
    did, and as a module built today from the same settings and weights does."""
    saved = torch.load(OLD / f"{name}.ckpt", weights_only=True)
    assert "vidlab_version" not in saved and saved["hyper_parameters"]["model"]["_target_"]  # really 0.2's
    expected = torch.load(OLD / "restored.pt", weights_only=True)
    clip = expected["stained"].permute(0, 3, 1, 2).float() / 255
    module, lean = load_module(OLD / f"{name}.ckpt"), load_restoration(OLD / f"{name}.ckpt")  # lean: restore's
    with torch.no_grad():
        restored = module.restore_clip(clip)
        torch.testing.assert_close(lean.net.restore(clip, np.arange(len(clip)), 16), restored, rtol=0, atol=0)
    assert type(lean.smoother) is type(module.smoother)
    torch.testing.assert_close(vars(lean.smoother), vars(module.smoother), rtol=0, atol=0)
    torch.testing.assert_close(restored, expected[name])
    assert (restored - clip).abs().mean() > 0.01  # the clip was changed, so the comparison says something

    model = {k: v for k, v in saved["hyper_parameters"]["model"].items() if k != "_target_"}
    if model["name"] == "blend_unet":  # the fitted stain's choice without its _target_; the learned one's None
        model["stain"] = {k: v for k, v in model["stain"].items() if k != "_target_"} if "stain" in model else None
    today = RestorationModule(model={**choice_values("model", model["name"]), **model},
                              smoothing=choice_values("smoothing", "masked"), loss=LOSS)
    today.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(today.eval().restore_clip(clip), restored)


@pytest.mark.parametrize("load", LOADERS)
def test_checkpoints_of_a_newer_vidlab_or_broken_ones_of_0_2_are_refused_in_one_line_naming_the_version(
        blend_checkpoint: Path, tmp_path: Path, load: Callable[[Path], object]):
    """One of a newer vidlab, or a 0.2 one whose weights do not fit, is refused in one line that names
    the versions."""
    from vidlab import __version__

    saved = torch.load(blend_checkpoint, weights_only=True)
    assert saved["vidlab_version"] == __version__
    torch.save({**saved, "vidlab_version": "9.1.0"}, tmp_path / "v9.ckpt")
    with pytest.raises(ConfigError,
                       match=rf"^model: .*v9.ckpt was written by vidlab 9.1.0, newer than this vidlab {__version__}"):
        load(tmp_path / "v9.ckpt")
    old = torch.load(OLD / "blend_unet_learned.ckpt", weights_only=True)
    torch.save({**old, "state_dict": {k: v for k, v in old["state_dict"].items() if "estimator" not in k}},
               tmp_path / "broken.ckpt")
    with pytest.raises(ConfigError, match=rf"not a train.py checkpoint .*\(written by vidlab 0.2 or older; "
                                          rf"this is vidlab {__version__}\): Error\(s\) in loading state_dict"):
        load(tmp_path / "broken.ckpt")
