"""What a run is tagged with: MLflow's own context (user, source), the git commit, the Slurm job, and
Hydra's job, output folder and ``-m`` sweep (whose parent run a job finds in :data:`PARENT_RUN_FILE`)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from mlflow.tracking.context.registry import resolve_tags

from vidlab.cluster import JOB_TAG, slurm_job_id

PARENT_RUN_FILE = ".mlflow_parent_run"
"""In a sweep's folder: the id of the sweep's parent run (:mod:`vidlab.sweeps` writes it), so each
job's run is its child."""


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def hydra_tags() -> dict[str, str]:
    """Job number, sweep folder and a sweep id shared by every job of one ``-m`` sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    tags = {"hydra_output_dir": str(hc.runtime.output_dir)}
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = str(Path(hc.sweep.dir).resolve())
        parent = Path(sweep_dir) / PARENT_RUN_FILE
        if parent.exists():
            tags["mlflow.parentRunId"] = parent.read_text().strip()
        tags.update({
            "sweep_dir": sweep_dir,
            "sweep_id": hashlib.sha1(sweep_dir.encode()).hexdigest()[:12],
            "hydra_job_num": str(hc.job.num),
            "hydra_overrides": " ".join(hc.overrides.task),
        })
    else:
        tags["hydra_overrides"] = " ".join(hc.overrides.task)
    return tags


def run_tags(root: Path, output_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """MLflow's own context tags (user, source name and type), the git commit, Hydra's, ``extra``."""
    tags = resolve_tags({"output_dir": str(output_dir), **extra, **hydra_tags()})
    job = slurm_job_id()
    if job:
        tags[JOB_TAG] = job
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags
