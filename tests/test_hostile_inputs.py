"""What a hostile afternoon tried on ``train.py`` and ``extract.py`` (docs/reliability.md, round two): a finished run is
never rewritten by a checkpoint given to resume, Hydra's own refusals and data-dependent misfits are one
line with nothing made, an unusable store is one line, and a full disk leaves no truncated checkpoint.
In this process through the scripts' ``__main__`` (conftest's ``train``, ``extract``), as the exit code is
``SystemExit``'s."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import copy_of, extract, mounted_tmpfs, moving_square_frames, only_line, tiny_overrides, train


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns.db")


def _runs(root: Path) -> list:
    client = _client(root)
    return client.search_runs([client.get_experiment_by_name("restoration").experiment_id])


def _nothing_made(root: Path) -> None:
    assert not (root / "mlruns.db").exists() and not list(root.rglob("*.ckpt"))


def _snapshot(client: MlflowClient, run_id: str) -> tuple:
    """All a user reads of a run: status, params, tags but the store's own, metrics and artifacts."""
    run = client.get_run(run_id)

    def artifacts(path: str | None = None) -> list[str]:
        return [p for a in client.list_artifacts(run_id, path) for p in (artifacts(a.path) if a.is_dir else [a.path])]

    return run.info.status, run.info.end_time, run.data.params, run.data.tags, run.data.metrics, sorted(artifacts())


# ---------------------------------------------------------------- refused before anything is made
@pytest.mark.parametrize("override,line", [
    ("model=nonexistent", "config error: In 'task/restoration': Could not find 'model/nonexistent' "
                          "(choose one of blend_unet, unet, unet_temporal)"),
    ("trainer.max_epoch=3", "config error: Could not override 'trainer.max_epoch'"),
    ("model==", "config error: Error parsing override 'model=='"),
    ("seed=-1", "config error: seed must be in [0, 4294967295] (got -1)"),
    ("dataset.seed=-1", "config error: dataset.seed must be in [0, 4294967295] (got -1)"),
])
def test_hydras_refusals_and_bad_seeds_are_one_line_exit_2(tmp_path: Path, override: str, line: str):
    proc = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", override, check=False)
    assert proc.returncode == 2 and only_line(proc.stderr).startswith(line), proc.stderr[-2000:]
    _nothing_made(tmp_path)


def test_hydras_refusals_of_extract_py_are_one_line_exit_2(tmp_path: Path):
    proc = extract(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", "backbone=nope", check=False)
    assert proc.returncode == 2 and only_line(proc.stderr).startswith(
        "config error: In 'extract': Could not find 'backbone/nope' (choose one of mc3_18, "), proc.stderr[-2000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlruns.db").exists()


def test_a_root_that_is_a_file_is_one_line(tmp_path: Path):
    root = tmp_path / "a file"
    root.write_text("mine")
    proc = train(f"paths.root={root}", check=False)
    assert proc.returncode == 2 and only_line(proc.stderr).startswith("config error: cannot create "), proc.stderr[-2000:]
    assert root.read_text() == "mine"


@pytest.mark.parametrize("content", [b"<html>not mnist</html>" * 10, b"\x00\x00\x08\x03" + b"\x00" * 40])
def test_a_file_that_is_not_mnist_is_one_line(tmp_path: Path, content: bytes):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    proc = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", f"dataset.mnist_path={path}", check=False)
    assert proc.returncode == 1 and only_line(proc.stderr) == (
        f"error: dataset.mnist_path: {path} is not an MNIST IDX image file (*-images-idx3-ubyte[.gz]: magic 2051, "
        "then count, rows, columns and the pixels)"), proc.stderr[-2000:]
    _nothing_made(tmp_path)


@pytest.mark.parametrize("case", ["sizes differ", "stain too big"])
def test_videos_that_do_not_fit_are_refused_before_any_run(tmp_path: Path, case: str):
    """Frame sizes are read from the videos (one demux each) before the run or a checkpoint exists:
    clips of different sizes cannot be batched without ``dataset.resize``, and a stain must fit."""
    from vidlab.video import write_video

    sizes = [(40, 56), (48, 64), (40, 56)] if case == "sizes differ" else [(40, 56)] * 3
    for i, (h, w) in enumerate(sizes):
        write_video(tmp_path / "videos" / f"v{i}.mp4", moving_square_frames(12, h, w), 24)
    proc = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", "dataset=video_folder", "model=unet", "dataset.clip_frames=4",
                 f"dataset.path={tmp_path / 'videos'}", f"corruption.radius={25 if case == 'stain too big' else 5}", check=False)
    line = only_line(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-2000:]
    if case == "sizes differ":
        assert line.startswith("config error: dataset.resize: the videos differ in frame size (40x56 (v0.mp4), 48x64 (v1.mp4))")
    else:
        assert line.startswith("config error: corruption: ")
    _nothing_made(tmp_path)


# ---------------------------------------------------------------- a finished run stays as it was
def test_a_checkpoint_of_another_model_leaves_its_finished_run_as_it_was(tiny_run: Path, digits: Path, tmp_path: Path):
    root = copy_of(tiny_run, tmp_path / "root")
    checkpoint = root / "outputs/run/checkpoints/last.ckpt"
    (run,) = _runs(root)
    before = _snapshot(_client(root), run.info.run_id)
    proc = train(*tiny_overrides(root, digits), f"hydra.run.dir={root}/again", "model=unet", f"ckpt_path={checkpoint}", check=False)
    assert proc.returncode == 2
    assert only_line(proc.stderr).startswith(f"config error: ckpt_path: {checkpoint} was trained as model=blend_unet ("), proc.stderr
    assert _snapshot(_client(root), run.info.run_id) == before and len(_runs(root)) == 1

    probe_like = tmp_path / "probe.ckpt"  # a Lightning checkpoint of another task: no restoration model in it
    torch.save({"state_dict": {"net.0.weight": torch.zeros(2, 2)}, "epoch": 3, "hyper_parameters": {"hidden": 8}}, probe_like)
    proc = train(*tiny_overrides(root, digits), f"hydra.run.dir={root}/again2", f"ckpt_path={probe_like}", check=False)
    assert proc.returncode == 2 and "is not a train.py checkpoint of vidlab's RestorationModule" in only_line(proc.stderr)
    assert _snapshot(_client(root), run.info.run_id) == before


def test_resuming_a_finished_or_deleted_run_trains_on_in_a_new_run(tiny_run: Path, digits: Path, tmp_path: Path):
    """The finished run keeps its result, params and config; the resumed training is a new run that
    names the one it continues (``vidlab.resumed_from``). A deleted run is not brought back."""
    root = copy_of(tiny_run, tmp_path / "root")
    checkpoint = root / "outputs/run/checkpoints/last.ckpt"
    client = _client(root)
    (run,) = _runs(root)
    before = _snapshot(client, run.info.run_id)
    same_model = [*tiny_overrides(root, digits), "model.base_channels=6", "trainer.max_epochs=3", "logger.log_model=false"]
    train(*same_model, f"hydra.run.dir={root}/resumed", f"ckpt_path={checkpoint}")
    assert _snapshot(client, run.info.run_id) == before
    (resumed,) = [r for r in _runs(root) if r.info.run_id != run.info.run_id]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["vidlab.resumed_from"] == run.info.run_id

    client.delete_run(run.info.run_id)
    train(*same_model, f"hydra.run.dir={root}/after_delete", f"ckpt_path={checkpoint}")
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert [r.info.status for r in _runs(root)] == ["FINISHED", "FINISHED"]  # the deleted one is not listed


# ---------------------------------------------------------------- the store and the disk
def test_a_store_that_is_not_a_database_is_one_line_and_kept(tmp_path: Path, digits: Path):
    garbage = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "mlruns.db").write_bytes(garbage)
    proc = train(*tiny_overrides(tmp_path, digits), check=False)
    assert proc.returncode == 1 and only_line(proc.stderr) == (
        f"error: logger.tracking_uri: cannot use the MLflow store sqlite:///{tmp_path}/mlruns.db: "
        "(sqlite3.DatabaseError) file is not a database"), proc.stderr[-2000:]
    assert (tmp_path / "mlruns.db").read_bytes() == garbage and not list(tmp_path.rglob("*.ckpt"))


def test_a_read_only_store_is_one_line(tmp_path: Path, digits: Path):
    with mounted_tmpfs(tmp_path / "ro", "1m") as ro:
        (ro / "mlruns.db").write_bytes(b"")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        proc = train(*tiny_overrides(tmp_path, digits), f"logger.tracking_uri=sqlite:///{ro}/mlruns.db", check=False)
    assert proc.returncode == 1 and only_line(proc.stderr).startswith(
        f"error: logger.tracking_uri: cannot use the MLflow store sqlite:///{ro}/mlruns.db: "), proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_full_disk_is_one_line_leaves_no_truncated_checkpoint_and_the_same_command_runs_once_freed(tmp_path: Path,
                                                                                                     digits: Path):
    with mounted_tmpfs(tmp_path / "disk", "120k") as disk:
        command = [*tiny_overrides(tmp_path, digits), f"hydra.run.dir={disk}/run", "logger.log_model=false"]
        proc = train(*command, check=False)
        line = proc.stderr.strip().splitlines()[-1]  # after the store's and Lightning's own log lines
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and line.startswith(f"error: no space left on {disk}/run/checkpoints/"), proc.stderr[-3000:]
        assert line.endswith(": free some space and run the same command again")
        left = sorted(p.name for p in (disk / "run/checkpoints").iterdir())
        for name in left:  # whatever is there under a checkpoint's name loads whole; no temporary file stays
            assert name.endswith(".ckpt") and torch.load(disk / "run/checkpoints" / name, weights_only=True)["state_dict"]
        (run,) = _runs(tmp_path)
        assert run.info.status == "FAILED" and run.data.tags["vidlab.error"] == line.removeprefix("error: ")

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        train(*command)
    assert [r.info.status for r in _runs(tmp_path)] == ["FINISHED", "FAILED"]
