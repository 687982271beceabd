"""The docs' Slurm sweep (submitit, Lightning DDP) run as written on a real one-node Slurm cluster, with
the values a user without GPUs passes: the ``cpu`` partition, two tasks per job, DDP on CPU (gloo).
The jobs are real Slurm jobs, so this is processes throughout."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from vidlab.tracking import PARENT_RUN_FILE

from conftest import EXTRACT, EXTRACTED, ROOT, make_index, run_extract, tiny_overrides
from services import Slurm, slurm  # noqa: F401 - slurm is a fixture
from test_readme import documented_commands

SLURM_SWEEP = next(c for c in documented_commands() if "hydra/launcher=submitit_slurm" in c)
ON_CPU = {"partition=gpu": "partition=cpu", "gpus_per_node=4": "gpus_per_node=0",
          "tasks_per_node=4": "tasks_per_node=2", "trainer.devices=4": "trainer.devices=2 trainer.accelerator=cpu"}


@pytest.fixture(autouse=True)
def _a_free_node(slurm: Slurm) -> Iterator[None]:  # noqa: F811
    """Each test ends with no job left: one that hangs fails its own test alone."""
    yield
    slurm.cancel_all()


def _sweep_command(root: Path, digits: Path, *more: str) -> list[str]:
    command = SLURM_SWEEP
    for gpu, cpu in ON_CPU.items():
        assert gpu in command, gpu
        command = command.replace(gpu, cpu)
    return [sys.executable, str(ROOT / "train.py"), *command.split()[2:], *tiny_overrides(root, digits),
            "model.base_channels=4", *more]


def _runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    return client.search_runs([client.get_experiment_by_name("restoration").experiment_id], max_results=100)


def _wait_for_a_validation(slurm: Slurm, root: Path, sweep: subprocess.Popen) -> None:  # noqa: F811
    """Until a job of the sweep logged its first validation."""
    deadline = time.time() + 240
    ready = root / "outputs/sweep" / PARENT_RUN_FILE  # written once the store is made (not read while it is made)
    while not [r for r in (_runs(root) if ready.exists() else []) if "val/raw/psnr" in r.data.metrics]:
        assert sweep.poll() is None, sweep.communicate()
        if time.time() > deadline:
            slurm.ended(sweep, 0, root / "outputs/sweep")
        time.sleep(1)


def test_the_docs_slurm_sweep_runs_on_a_real_cluster_each_job_two_ddp_tasks_one_child_run(
        slurm: Slurm, digits: Path, tmp_path: Path):  # noqa: F811
    """About a minute: two jobs (``model.depth=3,4``), each two Slurm tasks training one DDP model."""
    sweep = subprocess.Popen(_sweep_command(tmp_path, digits), cwd=ROOT, env=slurm.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _, err = slurm.ended(sweep, 400, tmp_path / "outputs/sweep")
    assert sweep.returncode == 0, err[-5000:]
    runs = _runs(tmp_path)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(runs) == 3
    assert sorted(r.data.params["model.depth"] for r in jobs) == ["3", "4"]
    for job in jobs:
        assert job.info.status == "FINISHED" and job.data.params["trainer.strategy"] == "ddp"
        assert "test/raw/psnr_content_stain" in job.data.metrics
    submitit = tmp_path / "outputs/sweep/.submitit"
    # one folder per Slurm array task
    for job_folder in [p for p in submitit.iterdir() if re.fullmatch(r"\d+_\d+", p.name)]:
        logs = sorted(p.name for p in job_folder.glob("*_log.out"))
        assert len(logs) == 2, logs  # two tasks per job
        text = "".join((job_folder / log).read_text() for log in logs)
        assert "MEMBER: 1/2" in text and "MEMBER: 2/2" in text, text[-3000:]  # one DDP group of two ranks


def test_scancel_of_a_job_ends_its_run_killed_with_the_reason(slurm: Slurm, digits: Path, tmp_path: Path):  # noqa: F811
    """``scancel`` sends the job's tasks SIGTERM: the job stops at a batch boundary and its run ends
    KILLED, saying so; the sweep reports the job failed and its parent run says which."""
    sweep = subprocess.Popen(_sweep_command(tmp_path, digits, "trainer.max_epochs=500"), cwd=ROOT, env=slurm.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_a_validation(slurm, tmp_path, sweep)
    jobs = slurm.run("squeue", "-h", "-o", "%i").split()
    assert jobs, "no job in the queue"
    slurm.run("scancel", *jobs)
    _, err = slurm.ended(sweep, 240, tmp_path / "outputs/sweep")
    assert sweep.returncode == 1, err[-3000:]
    children = [r for r in _runs(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    assert children and all(r.info.status == "KILLED" for r in children), (
        [(r.info.run_name, r.info.status) for r in children])
    [parent] = [r for r in _runs(tmp_path) if "mlflow.parentRunId" not in r.data.tags]  # the whole sweep was cancelled
    assert parent.info.status == "KILLED", parent.data.tags.get("vidlab.error")
    assert all(r.data.tags.get("vidlab.error", "").startswith(("stopped by SIGTERM", "Slurm ended job"))
               for r in children)


def _extract_on_slurm(index: Path, root: Path, *more: str) -> list[str]:
    """``extract.py`` as one Slurm job of two tasks, one DDP rank each (each writes its disjoint rows)."""
    return [sys.executable, str(ROOT / "extract.py"), "-m", "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=cpu", "hydra.launcher.tasks_per_node=2", "extraction.strategy=ddp",
            "extraction.devices=2", "extraction.accelerator=cpu", f"index={index}", f"paths.root={root}",
            f"hydra.sweep.dir={root}/sweep", *EXTRACT, *more]


def _npy(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npy"))}


def test_a_ddp_extraction_as_two_slurm_tasks_writes_the_files_of_one_process(
        slurm: Slurm, small_index: Path, tmp_path: Path):  # noqa: F811
    """Byte for byte what one process writes, and one MLflow run (rank 0's)."""
    one = tmp_path / "one process"
    run_extract(f"index={small_index}", f"paths.root={one}", f"hydra.run.dir={one}/run", *EXTRACT)
    two = tmp_path / "two tasks"
    extraction = subprocess.Popen(_extract_on_slurm(small_index, two), cwd=ROOT, env=slurm.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = slurm.ended(extraction, 400, two / "sweep")
    assert extraction.returncode == 0, err[-5000:]
    written = _npy(one / EXTRACTED)
    assert written and _npy(two / EXTRACTED) == written
    logs = "".join(p.read_text() for p in (two / "sweep/.submitit").rglob("*_log.out"))
    assert "MEMBER: 2/2" in logs, logs[-3000:]  # the second rank was a Slurm task of the job
    client = MlflowClient(f"sqlite:///{two}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("embeddings").experiment_id])
    assert [r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags] == ["FINISHED"]


def test_a_ddp_extraction_cancelled_on_slurm_resumes_to_the_files_of_one_process(
        slurm: Slurm, tmp_path: Path):  # noqa: F811
    """About 2 minutes: ``scancel`` once some rows are written, the same command again: it resumes from
    the rows the cancelled job wrote and ends with exactly one process's files."""
    index = make_index(tmp_path / "index",
                       {f"video_{i}.mp4": (240, "h264", ("train", "val", "test")[i % 3], i % 2) for i in range(8)})
    one = tmp_path / "one process"
    run_extract(f"index={index}", f"paths.root={one}", f"hydra.run.dir={one}/run", *EXTRACT, "logger=none")
    two = tmp_path / "two tasks"
    command = _extract_on_slurm(index, two, "logger=none")
    first = subprocess.Popen(command, cwd=ROOT, env=slurm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    out = two / EXTRACTED
    deadline = time.time() + 200
    while not (list(out.glob("done_*.npy")) and any(np.load(p).any() for p in out.glob("done_*.npy"))):
        assert first.poll() is None, first.communicate()
        if time.time() > deadline:
            slurm.ended(first, 0, two / "sweep")
        time.sleep(0.2)
    slurm.run("scancel", *slurm.run("squeue", "-h", "-o", "%i").split())
    slurm.ended(first, 120, two / "sweep")
    written = sum(int(np.load(p).sum()) for p in out.glob("done_*.npy"))
    total = sum(len(np.load(p)) for p in out.glob("done_*.npy"))
    assert 0 < written < total, (written, total)  # cancelled midway
    again = subprocess.Popen(command, cwd=ROOT, env=slurm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    _, err = slurm.ended(again, 200, two / "sweep")
    assert again.returncode == 0, err[-5000:]
    assert _npy(out) == _npy(one / EXTRACTED)


def test_a_preempted_job_is_requeued_and_resumes_into_the_same_run_to_its_end(
        slurm: Slurm, digits: Path, tmp_path: Path):  # noqa: F811
    """``scancel --signal=USR2`` is what Slurm sends a job before its time limit or when it is preempted
    (submitit's ``--signal=USR2@<hydra.launcher.signal_delay_s>``). The job stops at a batch boundary
    with its checkpoint, submitit requeues it, and the requeued job resumes from the checkpoint into the
    same MLflow run: one run, FINISHED, every epoch's validation there."""
    epochs = 30
    sweep = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=cpu",
         *tiny_overrides(tmp_path, digits), "model.base_channels=4", f"trainer.max_epochs={epochs}", "seed=0"],
        cwd=ROOT, env=slurm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_a_validation(slurm, tmp_path, sweep)
    [job] = slurm.run("squeue", "-h", "-o", "%i").split()
    slurm.run("scancel", "--signal=USR2", job)
    _, err = slurm.ended(sweep, 420, tmp_path / "outputs/sweep")
    assert sweep.returncode == 0, err[-5000:]
    [run] = [r for r in _runs(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    assert (run.info.status == "FINISHED"
            and run.data.tags["vidlab.requeued"].startswith("preempted by Slurm (SIGUSR2): requeued"))
    history = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").get_metric_history(run.info.run_id, "val/raw/psnr")
    assert len({m.step for m in history}) == epochs, sorted(m.step for m in history)
    assert "REQUEUED" in slurm.run("sacct", "-n", "-D", "-P", "-o", "State", "-j", job)  # Slurm's own account
