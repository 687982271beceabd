"""Generated non-black footage (``python -m vidlab.restoration.footage``) and the blend-aware model
trained on it through ``train.py``'s own ``main`` with ``dataset=video_folder``."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from vidlab.restoration.footage import FORMATS, write_footage
from vidlab.video import iter_frames
from vidlab.video.count import video_info

from conftest import ROOT, tiny_overrides, train


def test_footage_is_every_format_and_size_seeded_and_nowhere_black(tmp_path: Path):
    paths = write_footage(tmp_path / "a", videos=4, frames=12, fps=24.0, seed=3)
    assert [p.suffix for p in paths] == [".mp4", ".mkv", ".avi", ".mp4"]
    for path, (_, _, height, width) in zip(paths, FORMATS + FORMATS[:1]):
        info = video_info(path)
        assert (info.height, info.width, info.n_frames) == (height, width, 12)
        frames = np.stack(list(iter_frames(path)))
        # the clip-minimum trick needs a black frame at every pixel: here the minimum is far from it
        assert np.median(frames.min(axis=(0, 3))) > 20
        assert np.abs(np.diff(frames.astype(int), axis=0)).mean() > 2  # it moves
    again = write_footage(tmp_path / "b", videos=1, frames=12, fps=24.0, seed=3)[0]
    np.testing.assert_array_equal(np.stack(list(iter_frames(again))), np.stack(list(iter_frames(paths[0]))))


def test_command_line(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "vidlab.restoration.footage", str(tmp_path / "f"), "--videos", "2",
                           "--frames", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote 2 videos of 5 frames to {tmp_path / 'f'}\n"
    bad = subprocess.run([sys.executable, "-m", "vidlab.restoration.footage", str(tmp_path / "g"), "--videos", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and not (tmp_path / "g").exists()


def test_blend_model_trains_and_tests_on_a_folder_of_mixed_footage(tmp_path: Path, digits: Path):
    write_footage(tmp_path / "footage", videos=10, frames=32, fps=24.0, seed=0)
    train(*tiny_overrides(tmp_path, digits), "model=blend_unet", "dataset=video_folder",
          f"dataset.path={tmp_path}/footage", "dataset.resize=[72,128]", "model.base_channels=4")
    table = pd.read_csv(tmp_path / "outputs/run/test/comparison.csv").set_index("output")
    assert list(table.index[:5]) == ["stained input", "OpenCV inpainting, Telea (true mask)",
                                     "OpenCV inpainting, Navier-Stokes (true mask)", "clip-minimum blind inverse",
                                     "analytic inverse (true mask: the ceiling)"]
    assert np.isfinite(table.loc["blend_unet, smoothing=none"]).all()
    # the ceiling knows the stain; on non-black footage the clip-minimum estimate does not
    ceiling, clip_minimum = (table.loc[row, "psnr_stain"]
                             for row in ("analytic inverse (true mask: the ceiling)", "clip-minimum blind inverse"))
    assert ceiling > 28 and clip_minimum < ceiling - 10
