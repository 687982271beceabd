"""What vidlab asks of the Slurm cluster a job runs on: which job it is, and how Slurm ended a job
whose process could not say so itself. ``scancel`` (and a node failure, a time limit, an out-of-memory
kill) ends a job's tasks with SIGKILL once ``srun`` forwards it, so the job's MLflow run is left
RUNNING; the sweep's launching process ends it with Slurm's own account (``sacct``)."""

from __future__ import annotations

import os
import shutil
import subprocess

JOB_TAG = "slurm_job_id"  # the run tag naming the Slurm job (array jobs as 12_3), as squeue and sacct write it
STOPPED_STATES = {"CANCELLED": "KILLED", "PREEMPTED": "KILLED", "TIMEOUT": "KILLED", "DEADLINE": "KILLED",
                  "FAILED": "FAILED", "NODE_FAIL": "FAILED", "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED"}


def slurm_job_id() -> str | None:
    """The Slurm job this process runs in, or None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def how_slurm_ended(job_id: str) -> tuple[str, str] | None:
    """``(MLflow status, reason)`` for a job Slurm ended before it could end its run (cancelled,
    preempted, out of time or memory, its node failed); None while it runs, if it completed, or where
    Slurm's accounting cannot be asked."""
    sacct = shutil.which("sacct")
    if sacct is None:
        return None
    try:
        out = subprocess.run([sacct, "-n", "-X", "-P", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    state = out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else ""
    status = STOPPED_STATES.get(state.split()[0] if state else "")
    return (status, f"Slurm ended job {job_id}: {state}") if status else None
