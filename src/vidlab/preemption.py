"""A Slurm job preempted, or near its time limit, under Hydra's submitit launcher: Slurm sends the job's
tasks SIGUSR2 (submitit's ``--signal=USR2@<hydra.launcher.signal_delay_s>``), and submitit's handler
requeues the job (``scontrol requeue``) and exits, at whatever line the training was. vidlab stops at
the next batch boundary instead, with its checkpoint, leaves its MLflow run RUNNING, then lets submitit
requeue; the requeued job (``SLURM_RESTART_COUNT`` >= 1) resumes from that checkpoint into the same run."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

REQUEUE_SIGNAL = signal.SIGUSR2
RESUME_FILE = "requeued_resume_from"  # in the job's checkpoint folder: the checkpoint the requeued job resumes from


def submitit_handler() -> Callable | None:
    """submitit's checkpoint-and-requeue handler when this process is a submitit job, else None."""
    handler = signal.getsignal(REQUEUE_SIGNAL)
    owner = getattr(handler, "__self__", None)
    return handler if owner is not None and type(owner).__module__.startswith("submitit.") else None


def record_resume_point(checkpoint: Path) -> None:
    """Where the requeued job resumes from (written whole, then renamed)."""
    from vidlab.files import atomic_path

    with atomic_path(checkpoint.parent / RESUME_FILE) as partial:
        Path(partial).write_text(str(checkpoint))


def requeued_checkpoint(checkpoints: Path) -> str | None:
    """The checkpoint this job, requeued by Slurm, resumes from; None for a job's first start."""
    recorded = checkpoints / RESUME_FILE
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1 or not recorded.is_file():
        return None
    path = recorded.read_text().strip()
    return path if Path(path).is_file() else None
