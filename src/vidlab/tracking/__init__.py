"""MLflow conventions in one place, by concern: :mod:`~vidlab.tracking.experiments` (the store, its
artifact folder, experiments), :mod:`~vidlab.tracking.server` (a shared server that goes away),
:mod:`~vidlab.tracking.tags` (what a run is tagged with), :mod:`~vidlab.tracking.runs` (opening,
continuing and ending runs), :mod:`~vidlab.tracking.artifacts` (config, figures, files),
:mod:`~vidlab.tracking.params`, :mod:`~vidlab.tracking.inputs` (datasets) and
:mod:`~vidlab.tracking.models` (MLflow models). What the tasks call on every run is importable
from here; the rest from its module."""

from vidlab.tracking.artifacts import best_effort, log_artifacts, log_config, log_figures
from vidlab.tracking.experiments import ensure_experiment, resolve_tracking_uri, store_errors
from vidlab.tracking.runs import (
    RunIdInCheckpoint,
    build_logger,
    end_open_runs,
    forget_open_runs,
    mark_open_runs_requeued,
    open_runs,
    reusable_run,
    start_run,
    unique_run_name,
)
from vidlab.tracking.server import fail_fast, lost_line
from vidlab.tracking.tags import PARENT_RUN_FILE, git_commit

__all__ = [
    "PARENT_RUN_FILE",
    "RunIdInCheckpoint",
    "best_effort",
    "build_logger",
    "end_open_runs",
    "ensure_experiment",
    "fail_fast",
    "forget_open_runs",
    "git_commit",
    "log_artifacts",
    "log_config",
    "log_figures",
    "lost_line",
    "mark_open_runs_requeued",
    "open_runs",
    "resolve_tracking_uri",
    "reusable_run",
    "start_run",
    "store_errors",
    "unique_run_name",
]
