"""Nothing lost, nothing silent: real signals on real processes, a real SQLite store, bad values
refused in one line before any work (docs/reliability.md lists what these tests guarantee). Exit codes
and signals are checked on real ``train.py``/``extract.py`` processes; the other refusals in this
process, through the same ``main`` (conftest's ``train`` and ``extract``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient

from vidlab import stops
from vidlab.sweeps import MlflowSweepCallback

from conftest import (
    EXTRACT,
    EXTRACTED,
    ROOT,
    copy_of,
    copy_of_index,
    extract,
    only_line,
    resume_checkpoint,
    run_train,
    train,
)

TRAIN_QUICK = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


def _runs(root: Path, experiment: str = "restoration") -> list:
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def _start_train(root: Path, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """``train.py`` in the background, its output in files (a full pipe would block it)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"paths.root={root}", f"hydra.run.dir={root}/run", *overrides],
        stdout=(root / "stdout.txt").open("w"), stderr=(root / "stderr.txt").open("w"), text=True,
    )
    return proc, root


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, (
            f"ended before {path} appeared: {(path.parents[2] / 'stderr.txt').read_text()[-3000:]}")
        assert time.time() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_training_stopped_by_a_signal_exits_non_zero_killed_and_resumes_the_same_run(tmp_path: Path, signum: int):
    proc, _ = _start_train(tmp_path, "trainer.max_epochs=50", *TRAIN_QUICK)
    _wait_for(tmp_path / "run/checkpoints/last.ckpt", proc)  # an epoch is done: training is under way
    proc.send_signal(signum)
    proc.wait(timeout=300)
    last_line = (tmp_path / "stderr.txt").read_text().strip().splitlines()[-1]
    assert proc.returncode == 128 + signum
    assert last_line.startswith(f"stopped by {signal.Signals(signum).name}: resume with ckpt_path=")
    checkpoint = resume_checkpoint(last_line, tmp_path / "run/checkpoints")
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["vidlab.error"] == f"stopped by {signal.Signals(signum).name}"

    if signum == signal.SIGINT:
        return  # resuming is the same after either signal
    train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/again", f"ckpt_path={checkpoint}",
          "trainer.max_epochs=3", *TRAIN_QUICK)
    (resumed,) = _runs(tmp_path)  # the same run, continued to its end
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert "test/raw/psnr" in resumed.data.metrics


@pytest.mark.parametrize("handler, stop", [(stops.handle, stops.Stopped), (MlflowSweepCallback()._stop, SystemExit)],
                         ids=["job", "sweep"])
def test_a_signal_inside_a_store_call_stops_as_the_call_returns(tmp_path: Path, handler, stop: type):
    """A real SIGTERM landing between a SQLite SELECT and its rows (where CI once lost a sweep's end
    status): raised there, the unfinished statement kept the store's read lock and every later write
    of the process (ending its runs) failed "database is locked" after 20 s. The job's and the sweep's
    handlers stop as that call returns: the loop of store writes it is in goes no further, and the
    run ends at once."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    run_id = client.create_run(client.create_experiment("stops")).info.run_id
    selects = []

    def signal_after_a_select(conn, cursor, statement: str, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not selects:
            selects.append(statement)
            signal.raise_signal(signal.SIGTERM)

    stops.reset()
    previous = signal.signal(signal.SIGTERM, handler)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", signal_after_a_select)
    try:
        with pytest.raises(stop):
            for i in range(1000):
                client.log_param(run_id, f"p{i}", str(i))
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "after_cursor_execute", signal_after_a_select)
        signal.signal(signal.SIGTERM, previous)
        stops.reset()
    assert selects and sys.getprofile() is None
    assert list(client.get_run(run_id).data.params) == ["p0"]  # the call the signal landed in, whole
    started = time.monotonic()
    client.set_terminated(run_id, "KILLED")
    assert time.monotonic() - started < 5 and client.get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize("override,message", [
    ("optimizer.lr=abc", "config error: optimizer: torch.optim.AdamW rejects"),
    ("trainer.precision=7", "config error: trainer: Precision 7 is invalid"),
    ("trainer.devices=0", "config error: trainer: `Trainer(devices=0)` value is not a valid input"),
    ("trainer.accelerator=tpu", "config error: trainer:"),
    ("ckpt_path=/nonexistent/last.ckpt", "config error: ckpt_path: checkpoint not found: /nonexistent/last.ckpt"),
    ("loss.stain_weight=inf", "config error: loss.stain_weight must be a finite number >= 0 (got inf)"),
    ("optimized_metric=val/raw/psnr_typo", "config error: optimized_metric: must be val/"),
    ("logger.register_as=team/stain", "config error: logger.register_as: Invalid model name 'team/stain'"),
    ("logger.system_metrics_interval=0.01", "config error: logger.system_metrics_interval must be >= 1 second"),
])
def test_values_lightning_or_torch_would_reject_are_one_line_before_any_work(tmp_path: Path, override: str,
                                                                             message: str):
    proc = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", override, check=False)
    assert proc.returncode == 2
    assert only_line(proc.stderr).startswith(message), proc.stderr[-2000:]
    # Hydra's run folder only
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and not (tmp_path / "run/checkpoints").exists()


def test_a_checkpoint_that_is_not_one_is_refused(tmp_path: Path):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_text("not a checkpoint")
    proc = train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", f"ckpt_path={bogus}", check=False)
    assert proc.returncode == 2 and only_line(proc.stderr).startswith(
        f"config error: ckpt_path: {bogus} is not a train.py checkpoint of vidlab's RestorationModule")
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "run/checkpoints").exists()


def test_concurrent_first_runs_share_one_fresh_store(tmp_path: Path):
    """Two processes creating the same fresh SQLite store at once: both get the experiment."""
    code = ("import sys; from pathlib import Path; from vidlab.schema import MlflowLoggerConfig; "
            "from vidlab.choices import choice_values; from vidlab.tracking import ensure_experiment; "
            "print(ensure_experiment(MlflowLoggerConfig(**{**choice_values('logger', 'mlflow'), "
            "'experiment_name': 'restoration', 'run_name': None}), Path(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1


def test_a_data_error_is_found_before_any_run_or_checkpoint(tmp_path: Path):
    """Videos with too few frames for a clip: one line, exit 1 as a shell sees it (a process), and
    no MLflow run or checkpoint, because the videos are probed before either is made."""
    import numpy as np

    from vidlab.video import write_video

    for i in range(3):
        write_video(tmp_path / "videos" / f"v{i}.mp4", np.zeros((4, 32, 32, 3), np.uint8), 24)
    proc = run_train(f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", "dataset=video_folder",
                     f"dataset.path={tmp_path / 'videos'}", "corruption.radius=5", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dataset:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "run/checkpoints").exists()


# ---------------------------------------------------------------- extraction
def _extract(index: Path, root: Path, *extra: str):
    return extract(f"index={index}", f"paths.root={root}", f"hydra.run.dir={root}/run", *EXTRACT, *extra, check=False)


def test_overwrite_never_removes_what_vidlab_did_not_write(small_index: Path, tmp_path: Path):
    index = small_index
    mine = tmp_path / "my folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work")
    for overwrite in ("false", "true"):
        proc = _extract(index, tmp_path, f"extraction.output={mine}", f"extraction.overwrite={overwrite}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == (
            f"config error: extraction.output: {mine} holds files an extraction did not write (thesis.tex); "
            "choose a new or empty folder")
        assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    assert not _runs(tmp_path, "embeddings")  # refused before any MLflow run


def test_a_second_writer_is_refused_and_settings_that_change_numbers_are_the_resume_key(
        small_index: Path, extraction: Path, tmp_path: Path):
    index = small_index
    out = copy_of(extraction / EXTRACTED, tmp_path / "emb")  # the session's extraction, written with EXTRACT
    before = {p.name: p.read_bytes() for p in out.glob("*.npy")}
    for change, key in [("extraction.channels_last=true", "channels_last"), ("extraction.colour=fast", "colour"),
                        ("extraction.compile=true", "compile")]:
        proc = _extract(index, tmp_path, f"extraction.output={out}", change)
        assert (proc.returncode == 2
                and f"holds another extraction (differs in {key})" in proc.stderr.strip().splitlines()[-1])
    assert {p.name: p.read_bytes() for p in out.glob("*.npy")} == before
    # a state_dict file: its content is part of the key, not only its name
    import torch
    from torchvision.models.video import r3d_18

    weights = tmp_path / "w.pt"
    torch.manual_seed(1)
    torch.save(r3d_18().state_dict(), weights)
    other = tmp_path / "emb2"
    assert _extract(index, tmp_path, f"extraction.output={other}", f"backbone.weights={weights}").returncode == 0
    torch.manual_seed(2)
    torch.save(r3d_18().state_dict(), weights)
    proc = _extract(index, tmp_path, f"extraction.output={other}", f"backbone.weights={weights}")
    assert proc.returncode == 2 and "differs in weights_sha256" in proc.stderr

    # a second process on the same folder while the first holds it
    import fcntl

    with (out / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        proc = _extract(index, tmp_path, f"extraction.output={out}", "extraction.overwrite=true")
    assert (proc.returncode == 2
            and f"{out} is being written by pid 4242 on elsewhere" in proc.stderr.strip().splitlines()[-1])
    assert {p.name: p.read_bytes() for p in out.glob("*.npy")} == before


@pytest.mark.parametrize("column,value,check", [
    ("start_frame", -3, "invalid_range"), ("split", "Test", "split"), ("y", 7, "labels"),
    ("start_frame", "abc", "types"), ("path", "../../../etc/passwd", "outside_root"),
])
def test_a_bad_index_is_refused_before_the_output_folder_exists(small_index: Path, tmp_path: Path, column: str, value,
                                                                check: str):
    import pandas as pd

    index = copy_of_index(small_index, tmp_path / "index")
    table = pd.read_csv(index)
    table[column] = table[column].astype(object)
    table.loc[1, column] = value
    table.to_csv(index, index=False)
    out = tmp_path / "emb"
    proc = _extract(index, tmp_path, f"extraction.output={out}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: index: {index} is not valid [") and check in line.split("[")[1].split("]")[0]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[0] == line
    assert not out.exists() and not _runs(tmp_path, "embeddings")  # refused before any folder or MLflow run


@pytest.mark.parametrize("content", ["text", "tensor", "other model"])
def test_a_weights_file_that_is_not_the_backbones_state_dict_is_one_line_before_any_run(
        small_index: Path, tmp_path: Path, content: str):
    import torch
    from torchvision.models.video import mc3_18

    weights = tmp_path / "w.pt"
    if content == "text":
        weights.write_text("not weights")
    else:
        # EXTRACT's backbone is r3d_18
        torch.save(torch.zeros(3) if content == "tensor" else mc3_18().state_dict(), weights)
    out = tmp_path / "emb"
    proc = _extract(small_index, tmp_path, f"extraction.output={out}", f"backbone.weights={weights}")
    assert (proc.returncode == 2
            and only_line(proc.stderr).startswith(f"config error: backbone.weights: {weights} ")), proc.stderr[-2000:]
    assert not out.exists() and not _runs(tmp_path, "embeddings")


def test_an_empty_video_is_refused(small_index: Path, tmp_path: Path):
    index = copy_of_index(small_index, tmp_path / "index")
    (index.parent / "videos/normal_c.mp4").write_bytes(b"")
    proc = _extract(index, tmp_path, f"extraction.output={tmp_path / 'emb'}")
    assert proc.returncode == 1 and "empty_files" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_extraction_stopped_by_a_signal_exits_non_zero_killed_and_resumes(small_index: Path, tmp_path: Path,
                                                                          signum: int):
    index = small_index
    out = tmp_path / "emb"
    cmd = [sys.executable, str(ROOT / "extract.py"), f"index={index}", f"paths.root={tmp_path}",
           f"hydra.run.dir={tmp_path}/run", *EXTRACT, "extraction.batch_size=1", f"extraction.output={out}"]
    proc = subprocess.Popen(cmd, stdout=(tmp_path / "o.txt").open("w"), stderr=(tmp_path / "e.txt").open("w"))
    deadline = time.time() + 300
    while not (out / "progress.json").exists():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "e.txt").read_text()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signum)
    proc.wait(timeout=300)
    assert proc.returncode == 128 + signum, (tmp_path / "e.txt").read_text()[-2000:]
    name = signal.Signals(signum).name
    assert (tmp_path / "e.txt").read_text().strip().splitlines()[-1].startswith(
        f"stopped by {name}: what was written is kept")
    assert not (out / "manifest.json").exists()
    (run,) = _runs(tmp_path, "embeddings")
    assert run.info.status == "KILLED"
    if signum == signal.SIGINT:
        return  # resuming is the same after either signal
    assert _extract(index, tmp_path, f"extraction.output={out}", "extraction.batch_size=1").returncode == 0
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("change", [
    "extraction.precision=bf16-mixed", "extraction.compile=true", "extraction.channels_last=true",
    "extraction.colour=fast", "extraction.batch_size=4", "extraction.seed=1", "extraction.preprocess=notebook",
    "extraction.notebook_size=112", "backbone=r3d_18", "backbone.frames_per_clip=16", "backbone.weights=null",
    "extraction.resize_on=workers",
])
def test_every_setting_that_changes_the_numbers_is_in_the_resume_key(change: str):
    """Each setting changes the fingerprint a rerun is compared with (the ones this CPU can run are
    also refused end to end above)."""
    from hydra import compose, initialize_config_dir

    from vidlab.embeddings.config import validate_extract
    from vidlab.embeddings.extraction import _fingerprint, _preprocess

    def fingerprint(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            spec = validate_extract(compose("extract",
                                            overrides=["index=/data/i.csv", "backbone.weights=DEFAULT", *overrides]))
        return _fingerprint(spec, "sha", _preprocess(spec))

    # used only there
    context = ["extraction.preprocess=notebook"] if change.startswith("extraction.notebook_size") else []
    assert fingerprint(*context, change) != fingerprint(*context)
