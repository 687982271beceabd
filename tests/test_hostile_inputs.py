"""What a hostile afternoon tried on ``train.py`` and ``extract.py`` (docs/reliability.md, rounds two and three): a
finished run is never rewritten by a checkpoint given to resume, Hydra's own refusals, typo'd keys and
data-dependent misfits are one line with nothing made, an unusable store or output folder is one line and
leaves nothing behind, a full disk leaves no truncated checkpoint and a killed save no temporary file, and
``stage=validate`` and ``stage=extract`` hold an index to one rule.
In this process through the scripts' ``__main__`` (conftest's ``train``, ``extract``), as the exit code is
``SystemExit``'s."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import (
    EXTRACT,
    call_main,
    copy_of,
    copy_of_index,
    extract,
    mounted_tmpfs,
    moving_square_frames,
    only_line,
    run_main,
    tiny_overrides,
    train,
    write_h264,
)


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
    assert (proc.returncode == 2
            and only_line(proc.stderr).startswith("config error: cannot create ")), proc.stderr[-2000:]
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
    proc = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", "dataset=video_folder", "model=unet",
                 "dataset.clip_frames=4", f"dataset.path={tmp_path / 'videos'}",
                 f"corruption.radius={25 if case == 'stain too big' else 5}", check=False)
    line = only_line(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-2000:]
    if case == "sizes differ":
        assert line.startswith(
            "config error: dataset.resize: the videos differ in frame size (40x56 (v0.mp4), 48x64 (v1.mp4))")
    else:
        assert line.startswith("config error: corruption: ")
    _nothing_made(tmp_path)


# ---------------------------------------------------------------- a finished run stays as it was
def test_a_checkpoint_of_another_model_leaves_its_finished_run_as_it_was(tiny_run: Path, digits: Path, tmp_path: Path):
    root = copy_of(tiny_run, tmp_path / "root")
    checkpoint = root / "outputs/run/checkpoints/last.ckpt"
    (run,) = _runs(root)
    before = _snapshot(_client(root), run.info.run_id)
    proc = train(*tiny_overrides(root, digits), f"hydra.run.dir={root}/again", "model=unet", f"ckpt_path={checkpoint}",
                 check=False)
    assert proc.returncode == 2
    assert only_line(proc.stderr).startswith(
        f"config error: ckpt_path: {checkpoint} was trained as model=blend_unet ("), proc.stderr
    assert _snapshot(_client(root), run.info.run_id) == before and len(_runs(root)) == 1

    probe_like = tmp_path / "probe.ckpt"  # a Lightning checkpoint of another task: no restoration model in it
    torch.save({"state_dict": {"net.0.weight": torch.zeros(2, 2)}, "epoch": 3, "hyper_parameters": {"hidden": 8}},
               probe_like)
    proc = train(*tiny_overrides(root, digits), f"hydra.run.dir={root}/again2", f"ckpt_path={probe_like}", check=False)
    assert (proc.returncode == 2
            and "is not a train.py checkpoint of vidlab's RestorationModule" in only_line(proc.stderr))
    assert _snapshot(_client(root), run.info.run_id) == before


def test_resuming_a_finished_or_deleted_run_trains_on_in_a_new_run(tiny_run: Path, digits: Path, tmp_path: Path):
    """The finished run keeps its result, params and config; the resumed training is a new run that
    names the one it continues (``vidlab.resumed_from``). A deleted run is not brought back."""
    root = copy_of(tiny_run, tmp_path / "root")
    checkpoint = root / "outputs/run/checkpoints/last.ckpt"
    client = _client(root)
    (run,) = _runs(root)
    before = _snapshot(client, run.info.run_id)
    same_model = [*tiny_overrides(root, digits), "model.base_channels=6", "trainer.max_epochs=3",
                  "logger.log_model=false"]
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


def test_a_tracking_server_that_is_not_there_is_one_line_within_seconds(tmp_path: Path, digits: Path):
    """No server on the port: one line, exit 1, before any checkpoint (MLflow's client alone retried
    for minutes, silently)."""
    with socket.socket() as probe:  # a free port: nothing listens on it once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    proc = train(*tiny_overrides(tmp_path, digits), f"logger.tracking_uri=http://127.0.0.1:{port}", check=False)
    assert time.monotonic() - started < 30
    assert proc.returncode == 1 and only_line(proc.stderr).startswith(
        f"error: logger.tracking_uri: no MLflow server answers at http://127.0.0.1:{port} "
        "(ConnectionError"), proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "mlruns.db").exists()


def test_a_full_disk_is_one_line_leaves_no_truncated_checkpoint_and_the_same_command_runs_once_freed(tmp_path: Path,
                                                                                                     digits: Path):
    with mounted_tmpfs(tmp_path / "disk", "120k") as disk:
        command = [*tiny_overrides(tmp_path, digits), f"hydra.run.dir={disk}/run", "logger.log_model=false"]
        proc = train(*command, check=False)
        line = proc.stderr.strip().splitlines()[-1]  # after the store's and Lightning's own log lines
        assert (proc.returncode == 1 and "Traceback" not in proc.stderr
                and line.startswith(f"error: no space left on {disk}/run/checkpoints/")), proc.stderr[-3000:]
        assert line.endswith(": free some space and run the same command again")
        left = sorted(p.name for p in (disk / "run/checkpoints").iterdir())
        for name in left:  # whatever is there under a checkpoint's name loads whole; no temporary file stays
            assert (name.endswith(".ckpt")
                    and torch.load(disk / "run/checkpoints" / name, weights_only=True)["state_dict"])
        (run,) = _runs(tmp_path)
        assert run.info.status == "FAILED" and run.data.tags["vidlab.error"] == line.removeprefix("error: ")

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        train(*command)
    assert [r.info.status for r in _runs(tmp_path)] == ["FINISHED", "FAILED"]


# ---------------------------------------------------------------- round three
@pytest.mark.parametrize("script,overrides,key", [
    ("train.py", ["+modell.depth=3"], "modell"),
    ("train.py", ["task=probe", "embeddings=/x", "+prob.hidden=8"], "prob"),
    ("extract.py", ["+extration.batch_size=4"], "extration"),
])
def test_a_key_added_that_no_group_or_schema_has_is_one_line_exit_2(tmp_path: Path, script: str, overrides: list[str],
                                                                    key: str):
    """Hydra adds a typo given with ``+`` as asked; vidlab refuses it, as Hydra refuses one without."""
    proc = run_main(script, f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", *overrides, check=False)
    assert proc.returncode == 2 and only_line(proc.stderr) == (
        f"config error: {key}: not a group or setting of this config "
        "(added with +? check its spelling; --help lists the groups)")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # Hydra's run folder only


def test_an_unwritable_extraction_output_or_store_is_one_line_and_leaves_nothing(small_index: Path, tmp_path: Path):
    with mounted_tmpfs(tmp_path / "ro", "1m") as ro:
        (ro / "mlruns.db").write_bytes(b"")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        common = [f"index={small_index}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", *EXTRACT]
        proc = extract(*common, f"extraction.output={ro}/emb", check=False)
        assert proc.returncode == 2 and only_line(proc.stderr) == (
            f"config error: extraction.output: cannot write {ro}/emb (Read-only file system)"), proc.stderr[-2000:]
        assert not (tmp_path / "mlruns.db").exists()

        # a writable output, a read-only store: the folder and its lock are taken back
        out = tmp_path / "outputs" / "emb"
        proc = extract(*common, f"extraction.output={out}", f"logger.tracking_uri=sqlite:///{ro}/mlruns.db",
                       check=False)
    assert proc.returncode == 1 and only_line(proc.stderr).startswith(
        f"error: logger.tracking_uri: cannot use the MLflow store sqlite:///{ro}/mlruns.db: "), proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()


def _past_end(index: Path) -> None:
    """The index's first video cut to 10 frames, its clips kept: four of them reach past its end."""
    table = pd.read_csv(index)
    write_h264(Path(table.path[0]), 10)
    table.loc[table.path == table.path[0], "n_frames"] = 10
    table.to_csv(index, index=False)


def test_a_clip_past_its_videos_end_is_one_rule_for_validate_and_extract(small_index: Path, tmp_path: Path):
    index = copy_of_index(small_index, tmp_path / "index")
    _past_end(index)
    line = (f"error: index: {index} is not valid [past_end]: 4 row(s), the first on line 3: end_frame > n_frames: "
            "the clip reaches past its video's end (check.allow_padded=true extracts it with the video's last frame "
            "repeated) (")
    common = [f"index={index}", f"paths.root={tmp_path}", *EXTRACT, f"extraction.output={tmp_path / 'emb'}"]
    validated = extract("stage=validate", *common, f"hydra.run.dir={tmp_path}/v", check=False)
    assert validated.returncode == 1 and "Traceback" not in validated.stderr
    assert validated.stderr.strip().splitlines()[-1] == f"{line}every violation: {tmp_path}/v/index_check.txt)"
    extracted = extract(*common, f"hydra.run.dir={tmp_path}/e", check=False)
    assert extracted.returncode == 1 and only_line(extracted.stderr) == (
        f"{line}extract.py stage=validate index={index} lists every violation)")
    assert not (tmp_path / "emb").exists()
    (run,) = _client(tmp_path).search_runs([_client(tmp_path).get_experiment_by_name("embeddings").experiment_id])
    assert (run.info.status == "FAILED"
            and run.data.tags["vidlab.error"] == validated.stderr.strip().splitlines()[-1][7:])

    index.with_suffix(".json").write_text('{"settings": {"short_videos": "pad"}}')  # built to pad: accepted as built
    assert "valid: no violation" in extract("stage=validate", *common, f"hydra.run.dir={tmp_path}/v2").stdout
    index.with_suffix(".json").unlink()
    for stage in ("validate", "extract"):  # asked for: both accept it, extraction repeats the last frame
        extract(f"stage={stage}", *common, f"hydra.run.dir={tmp_path}/{stage}", "check.allow_padded=true")
    assert sorted(pd.read_json(tmp_path / "emb/padded.jsonl", lines=True)["row"]) == [1, 2, 3, 4]


def test_a_raw_pickle_as_a_checkpoint_is_one_line_without_torchs_warning(tmp_path: Path, square_video: Path):
    """``ckpt_path`` of train.py and the model of restore: refused by vidlab alone (torch warned about a
    raw pickle's protocol before refusing it, two lines of its own)."""
    import pickle

    from vidlab import restore

    raw = tmp_path / "model.ckpt"
    raw.write_bytes(pickle.dumps({"state_dict": {}, "epoch": 3}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", f"ckpt_path={raw}", check=False)
        restored = call_main(lambda: restore.main([str(raw), str(square_video), str(tmp_path / "restored.mp4")]))
    assert [str(w.message) for w in caught if "pickle" in str(w.message)] == []
    for proc, key, prefix in [(trained, "ckpt_path", "config error"), (restored, "model", "error")]:
        assert proc.returncode == 2 and only_line(proc.stderr) == (
            f"{prefix}: {key}: {raw} is not a train.py checkpoint of vidlab's RestorationModule "
            "(e.g. outputs/.../checkpoints/best.ckpt) (not a torch.save archive)")
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "restored.mp4").exists()


def test_a_checkpoint_a_killed_save_left_half_written_is_removed_by_the_next_run(tmp_path: Path, digits: Path):
    """What ``kill -9`` leaves mid-save: vidlab's temporary name, written by a process that is gone.
    Only such files go; a live writer's, and the user's files, stay."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    folder = tmp_path / "outputs/run/checkpoints"
    folder.mkdir(parents=True)
    half = folder / f".last.{int(gone.stdout)}.part.ckpt"
    half.write_bytes(b"PK\x03\x04 half a checkpoint")
    kept = [folder / ".best.1.part.ckpt", folder / "notes.part.ckpt", folder / ".last.ckpt.bak",
            folder / f".mine.{os.getpid()}.part"]
    for path in kept:  # a live writer's (pid 1), and names that are not vidlab's temporaries
        path.write_text("not vidlab's to remove")
    train(*tiny_overrides(tmp_path, digits), "model.base_channels=4", "logger=none")
    assert not half.exists() and all(path.read_text() == "not vidlab's to remove" for path in kept)
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in folder.iterdir()}
