"""docs/extending.md's recipes performed as a newcomer would: every YAML and class written where the
page says, in a copy of the project, and nothing else edited; then trained, restored and probed with
them in that copy. Processes, because the point is that a fresh one finds the new modules (the models'
package discovery, the probes' module per choice, the registries' decorators) with no list to edit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, tiny_overrides

RECIPES = ("A corruption", "A model", "A smoothing", "A probe")
WHERE = re.compile(r"`((?:conf|src)/[\w/]+\.(?:yaml|py))`")  # the file a block goes to, named just before it


def recipe(title: str) -> list[tuple[str, str]]:
    """``(path, text)`` of each code block of docs/extending.md's section ``title``, in order."""
    section = (ROOT / "docs/extending.md").read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = list(re.finditer(r"```(?:yaml|python)\n(.*?)```", section, re.DOTALL))
    assert blocks, f"no code in the section {title!r}"
    return [(WHERE.findall(section[: block.start()])[-1], block[1]) for block in blocks]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with every recipe applied: a file the page names anew is written, one that
    exists ("beside the others") gets the block appended."""
    copy = tmp_path_factory.mktemp("project")
    for folder in ("src", "conf"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for script in ("train.py", "extract.py"):
        shutil.copy(ROOT / script, copy / script)
    for title in RECIPES:
        for path, text in recipe(title):
            target = copy / path
            if target.exists():
                target.write_text(f"{target.read_text()}\n\n{text}")
            else:
                target.write_text(text)
    return copy


def run_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the copy, importing vidlab from the copy's ``src`` (before the installed one)."""
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    done = subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_recipes_touch_only_the_files_they_name(project: Path):
    changed = {path for title in RECIPES for path, _ in recipe(title)}
    assert changed == {"conf/corruption/square_stain.yaml", "src/vidlab/restoration/corruption.py",
                       "conf/model/conv_stack.yaml", "src/vidlab/restoration/models/conv_stack.py",
                       "conf/smoothing/median.yaml", "src/vidlab/restoration/smoothing.py",
                       "conf/probe/centroid.yaml", "src/vidlab/probe/centroid.py"}


def test_the_new_corruption_model_and_smoothing_train_and_restore_in_the_copy(project: Path, tmp_path: Path,
                                                                               digits: Path):
    """One run with all three new choices (about 30 s: two processes), then restore with its checkpoint
    in tiles planned from the network's own ``halo``."""
    from vidlab.video import count_frames, write_video

    run_in(project, "train.py", *tiny_overrides(tmp_path, digits), "corruption=square_stain", "model=conv_stack",
           "smoothing=median", "trainer.max_epochs=1")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("restoration").experiment_id])[0]
    params = run.data.params
    assert run.info.status == "FINISHED" and np.isfinite(run.data.metrics["test/raw/psnr_stain"])
    assert (params["corruption.side"], params["model.width"], params["smoothing.window"]) == ("20", "16", "3")
    assert "model.depth" not in params
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 96, 3), dtype=np.uint8)
    video = write_video(tmp_path / "in.mp4", frames, fps=10)
    run_in(project, "-m", "vidlab.restore", str(tmp_path / "outputs/run/checkpoints/best.ckpt"), str(video),
           str(tmp_path / "out.mp4"), "--megapixels", "0.002", "--smoothing", "median")  # tiles of about 45x45
    assert count_frames(tmp_path / "out.mp4") == 6


def test_the_new_probe_fits_and_logs_in_the_copy(project: Path, tmp_path: Path):
    from vidlab.probe.localised import ANNOTATIONS, write_localised

    data = write_localised(tmp_path / "localised", videos={"train": 30, "val": 10, "test": 10}, dim=16)
    run_in(project, "train.py", "task=probe", f"embeddings={data}", "probe=centroid",
           f"probe.annotations={data / ANNOTATIONS}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/out")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("probe").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["probe"] == "centroid"
    assert run.data.metrics["test/roc_auc"] > 0.6 and run.data.metrics["test/frame_roc_auc"] > 0.6, run.data.metrics
    assert run.outputs.model_outputs  # its MLflow model, logged as the shipped probes' are
