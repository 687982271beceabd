"""Hydra ``-m`` sweeps as an MLflow user sees them: the parent run's end status (FINISHED, FAILED,
KILLED), swept params and best child; a failed job's traceback on its own run; every job's
``train.log``. A sweep that ends by an exception, an exit or a signal runs in its own ``train.py``
process: its parent run is ended by the process's exit hook or signal handler."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from vidlab.sweeps import optimized_mode, swept_params
from vidlab.tracking import PARENT_RUN_FILE

from conftest import ROOT, SWEEP, run_train, tiny_overrides

METRIC = "val/smoothed/psnr_content_stain"


def _sweep(root: Path, digits: Path, *overrides: str) -> list[str]:
    return ["-m", *tiny_overrides(root, digits), "model.base_channels=4", *overrides]


def _parent_and_children(root: Path) -> tuple[MlflowClient, Run, list[Run]]:
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`vidlab.sweep_parent` = 'true'")
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return client, parent, sorted(children, key=lambda run: int(run.data.tags["hydra_job_num"]))


def _best(client: MlflowClient, run: Run) -> float:
    return max(m.value for m in client.get_metric_history(run.info.run_id, METRIC) if math.isfinite(m.value))


def _assert_job_log(log: Path, epochs: int = 1) -> None:
    """Lightning's records and a line per epoch with its metrics, as written to the job's log file."""
    text = log.read_text()
    assert f"`Trainer.fit` stopped: `max_epochs={epochs}` reached." in text, text[-3000:]
    epochs = [line for line in text.splitlines() if f"[vidlab.trainer][INFO] - epoch 0/{epochs - 1}: " in line]
    assert epochs, f"no epoch line (is vidlab.trainer.EpochLog among the Trainer's callbacks?):\n{text[-3000:]}"
    epoch = epochs[0]
    assert f"{METRIC}=" in epoch and "train/loss_epoch=" in epoch and "_step=" not in epoch
    assert "[vidlab.trainer][INFO] - test: " in text


def test_swept_params_come_from_the_sweeper_and_the_command_line():
    config = OmegaConf.create({
        "optimized_metric": "val/roc_auc",
        "hydra": {"sweeper": {"direction": "minimize",
                              "params": {"optimizer.lr": "interval(0.0001, 0.01)", "seed": "0,1"}},
                  "overrides": {"task": ["debug=limit", "seed=3,4", "+trainer.gradient_clip_val=0.5,1",
                                         "model.depth=choice(2, 3)"]}},
    })
    assert swept_params(config) == {"optimizer.lr": "interval(0.0001, 0.01)", "seed": "3,4",
                                    "trainer.gradient_clip_val": "0.5,1", "model.depth": "choice(2, 3)"}
    assert optimized_mode(config) == "min"  # the sweeper's direction when the task has no optimized_mode
    config.optimized_mode = "max"
    assert optimized_mode(config) == "max"


def test_a_sweep_that_succeeds_ends_its_parent_finished_with_params_and_best_child(tiny_sweep: Path, tmp_path: Path):
    assert SWEEP == ["model.base_channels=4", "model.depth=2,3"]  # the session's sweep (conftest)
    client, parent, children = _parent_and_children(tiny_sweep)
    assert parent.info.status == "FINISHED" and "vidlab.error" not in parent.data.tags
    assert parent.data.params == {"model.depth": "2,3"}
    assert [c.data.params["model.depth"] for c in children] == ["2", "3"]
    assert parent.data.metrics["jobs"] == 2 and parent.data.metrics["jobs_failed"] == 0
    best = max(children, key=lambda c: _best(client, c))
    assert parent.data.metrics[f"best/{METRIC}"] == pytest.approx(_best(client, best))
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.tags["best_run_name"] == best.info.run_name
    assert sorted(c.info.run_name for c in children) == ["blend_unet-none-circular_stain",
                                                         "blend_unet-none-circular_stain-2"]
    assert f"model.depth={best.data.params['model.depth']}" in parent.data.tags["best_overrides"].split()
    summary = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep/sweep_summary.csv", str(tmp_path)))
    assert list(summary["override.model.depth"]) == [2, 3] and list(summary["status"]) == ["FINISHED"] * 2
    assert summary[f"best/{METRIC}"].max() == pytest.approx(parent.data.metrics[f"best/{METRIC}"])
    for job in ("0", "1"):
        _assert_job_log(tiny_sweep / "outputs/sweep" / job / "train.log")


def test_a_job_that_fails_fails_the_sweep_and_keeps_its_traceback(tmp_path: Path, digits: Path):
    """A value no check refuses up front (the scheduler's ``eta_min``) breaks job #0 after its first
    epoch; Hydra runs job #1, then exits 1 without calling ``on_multirun_end``."""
    proc = run_train(*_sweep(tmp_path, digits, "scheduler.eta_min=abc,0.0001"), check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    client, parent, (failed, done) = _parent_and_children(tmp_path)
    assert parent.info.status == "FAILED" and parent.data.params == {"scheduler.eta_min": "abc,0.0001"}
    assert parent.data.tags["vidlab.error"].startswith("job #0: TypeError: ")
    assert parent.data.metrics["jobs"] == 2 and parent.data.metrics["jobs_failed"] == 1
    assert parent.data.tags["best_run_id"] == done.info.run_id and done.info.status == "FINISHED"
    assert {"sweep/sweep_summary.csv", f"sweep/sweep_{METRIC.replace('/', '_')}.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}

    error = failed.data.tags["vidlab.error"].splitlines()
    assert failed.info.status == "FAILED" and 5 <= len(error) <= 20 and error[-1].startswith("TypeError: ")
    assert any(line.strip().startswith("File ") for line in error)  # where it failed, not only what
    logged = Path(client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path / "dl")))
    assert logged.read_text().startswith("Traceback (most recent call last):")
    assert logged.read_text() == (tmp_path / "outputs/sweep/0/error.txt").read_text()
    assert "[vidlab.jobs][ERROR] - failed: TypeError: " in (tmp_path / "outputs/sweep/0/train.log").read_text()


def test_a_config_error_in_a_job_fails_that_job_and_the_sweep_goes_on(tmp_path: Path, digits: Path):
    """A job refused before any work says why in one line and the next job runs; the sweep exits 1
    at its end naming the failed job, and its parent (ended at exit: Hydra's sweeper raises the
    failure after the batch) says which job failed and why."""
    proc = run_train(*_sweep(tmp_path, digits, "model.depth=9,2"), check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert any(line.startswith("config error: model.depth must be") for line in lines)
    assert (lines[-1].startswith("error: a job of the sweep failed (config error: model.depth must be")
            and "Traceback" not in proc.stderr)
    _, parent, children = _parent_and_children(tmp_path)
    # job #0 made no run
    assert [c.info.status for c in children] == ["FINISHED"] and children[0].data.tags["hydra_job_num"] == "1"
    assert (parent.info.status == "FAILED"
            and parent.data.tags["vidlab.error"].startswith("job #0: config error: model.depth must be"))
    assert parent.data.metrics["jobs"] == 1 and parent.data.metrics["jobs_failed"] == 1


def test_an_optuna_trial_that_fails_is_told_to_optuna_and_the_search_goes_on(tmp_path: Path, digits: Path):
    """The sampler (seeded) draws depth 2 for trial #0 and 9, which the model refuses, for #1: the
    failed trial is FAIL in Optuna, the search ends normally (results written), and the command exits
    1 naming it."""
    proc = run_train(*_sweep(tmp_path, digits, "hparams_search=restoration_optuna", "hydra.sweeper.n_trials=2",
                             "model.depth=choice(9,2)", "model.base_channels=choice(4)"), check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 1 of the sweep's jobs failed (job #1: config error: model.depth must be in [1, 6] (got 9)); "
        "the other jobs ran")
    assert "Failed experiment: config error: model.depth must be" in proc.stdout + proc.stderr  # Optuna was told
    results = OmegaConf.load(tmp_path / "outputs/sweep/optimization_results.yaml")
    assert results.best_params["model.depth"] == 2
    _, parent, children = _parent_and_children(tmp_path)
    assert [c.info.status for c in children] == ["FINISHED"]
    assert (parent.info.status == "FAILED"
            and parent.data.tags["vidlab.error"].startswith("job #1: config error: model.depth"))


def test_a_sweep_stopped_by_sigterm_ends_its_parent_killed(tmp_path: Path, digits: Path):
    args = [sys.executable, str(ROOT / "train.py"),
            *_sweep(tmp_path, digits, "model.depth=2,3", "trainer.max_epochs=50")]
    with (tmp_path / "stdout.txt").open("w") as out, (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err)
    try:
        parent_file = tmp_path / "outputs/sweep" / PARENT_RUN_FILE
        deadline = time.time() + 300
        while not (parent_file.exists() and _children_of(tmp_path, parent_file.read_text().strip())):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.time() < deadline, "no child run after 300 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (tmp_path / "stderr.txt").read_text()[-3000:]
    client, parent, children = _parent_and_children(tmp_path)
    assert parent.info.status == "KILLED" and parent.data.tags["vidlab.error"] == "job #0: stopped by SIGTERM"
    assert [c.info.status for c in children] == ["KILLED"]  # job #1 never started
    assert "sweep/sweep_summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}


def test_a_joblib_sweep_stopped_ends_every_child_killed(tmp_path: Path, digits: Path):
    """Ctrl-C (SIGINT to the whole process group: the sweep's process and both joblib workers) while
    two workers train: the sweep exits 130 and no run is left RUNNING, nor FAILED without a reason
    (the workers may be ended before their jobs end their runs; the sweep ends those). SIGTERM to
    the sweep's process alone goes through the same handler (``MlflowSweepCallback._stop``); it left
    both children RUNNING too before, and ends them KILLED now (it passed as a second case of this
    test, dropped because each case costs ~50 s of two workers starting torch and Lightning)."""
    args = [sys.executable, str(ROOT / "train.py"), *_sweep(tmp_path, digits, "hydra/launcher=joblib",
                                                             "hydra.launcher.n_jobs=2", "seed=0,1",
                                                             "trainer.max_epochs=50")]
    with (tmp_path / "stdout.txt").open("w") as out, (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, start_new_session=True)
    try:
        parent_file = tmp_path / "outputs/sweep" / PARENT_RUN_FILE
        deadline = time.time() + 300
        while not (parent_file.exists() and len(_children_of(tmp_path, parent_file.read_text().strip())) == 2):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.time() < deadline, "no two child runs after 300 s"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, (tmp_path / "stderr.txt").read_text()[-3000:]
    _, parent, children = _parent_and_children(tmp_path)
    assert parent.info.status == "KILLED" and parent.data.tags["vidlab.error"].startswith("stopped by SIGINT")
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    assert all(c.data.tags["vidlab.error"].startswith("stopped by SIGINT") for c in children)


def _children_of(root: Path, parent: str) -> list[Run]:
    """The sweep's child runs in its store (which the sweep created before writing the parent file)."""
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration").experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


def test_a_single_run_writes_its_log_file(tiny_run: Path):
    _assert_job_log(tiny_run / "outputs/run/train.log", epochs=2)
