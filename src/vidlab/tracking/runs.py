"""Opening, continuing and ending runs: a run for a job outside Lightning or Lightning's logger on
one, a unique run name, system metrics while it runs, the run id in checkpoints so a resumed
training continues its run, and an end status for every run this process opened."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient

from vidlab.schema import MlflowLoggerConfig
from vidlab.tracking.artifacts import best_effort
from vidlab.tracking.experiments import (
    ensure_experiment,
    experiment_artifact_location,
    resolve_tracking_uri,
    store_errors,
)
from vidlab.tracking.params import log_params
from vidlab.tracking.server import failing_fast, give_up, given_up, is_unreachable
from vidlab.tracking.tags import run_tags

# Runs this process opened and has not ended: whatever stops the job, each gets an end status.
_OPEN_RUNS: list[tuple[MlflowClient, str]] = []
_MONITORS: list[SystemMetricsMonitor] = []


class VidlabMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, but params are logged whole (Lightning cuts them at 250 chars)."""

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any]) -> None:
        log_params(self.experiment, self.run_id, params)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Lightning ends the run here when training fails (``sys.exc_info`` is what it is handling):
        not on a server that stopped answering, which would be asked again for as long."""
        handling = sys.exc_info()[1]
        if handling is not None and is_unreachable(handling):
            give_up()
        if given_up():
            return
        try:
            super().finalize(status)
        except Exception as err:
            if not is_unreachable(err):
                raise
            give_up()


def _monitor_system(cfg: MlflowLoggerConfig, uri: str, run_id: str, resumed: bool) -> None:
    """CPU, memory, disk (and GPU) utilisation as ``system/*`` metrics, every
    ``logger.system_metrics_interval`` seconds, until the run ends."""
    if cfg.system_metrics_interval is None or rank_zero_only.rank > 0:  # one monitor per machine's job, on rank 0
        return
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
    with best_effort("system metrics", client=None, run_id=run_id):
        monitor = SystemMetricsMonitor(run_id, sampling_interval=cfg.system_metrics_interval, resume_logging=resumed,
                                       tracking_uri=uri)
        monitor.start()
        _MONITORS.append(monitor)


def unique_run_name(client: MlflowClient, experiment_id: str, name: str | None) -> str | None:
    """``name``, or ``name-2``, ``name-3``... when runs of the experiment already have it: runs of a
    sweep over a seed or a learning rate are told apart in lists and compare views."""
    if not name:
        return name
    taken = {run.info.run_name for run in client.search_runs(
        [experiment_id], f"attributes.run_name LIKE '{name.replace(chr(39), '_')}%'", max_results=50000)}
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def open_runs() -> list[tuple[MlflowClient, str]]:
    """``(client, run id)`` of each run this process opened and has not ended yet, oldest first."""
    return list(_OPEN_RUNS)


def end_open_runs(status: str, reason: str | None = None) -> None:
    """End every run this process opened that is still RUNNING with ``status`` (FINISHED, FAILED,
    KILLED), the reason as the ``vidlab.error`` tag; then system metrics stop (a monitor stuck on an
    unreachable server must not keep a run from its end status)."""
    try:
        _end_runs(status, reason)
    finally:
        while _MONITORS:
            _stop_monitor(_MONITORS.pop())


def _stop_monitor(monitor: SystemMetricsMonitor) -> None:
    """Stop sampling system metrics. A job stopping without its server does not wait for the monitor's
    thread, which may be retrying its own request for ``logger.server_patience`` seconds: told to stop,
    the daemon thread ends with the process."""
    if not failing_fast():
        monitor.finish()
        return
    # the job's one line about the server is its last: the thread's own warnings about it would follow
    logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)
    if hasattr(monitor, "_shutdown_event"):  # MLflow's SystemMetricsMonitor has no stop that does not join
        monitor._shutdown_event.set()


def mark_open_runs_requeued(note: str) -> None:
    """A job Slurm is requeuing: its runs are RUNNING again (Lightning's logger ended them FAILED on the
    interrupt), tagged ``vidlab.requeued``, for the requeued job to continue."""
    for client, run_id in _OPEN_RUNS:
        client.set_tag(run_id, "vidlab.requeued", note[:5000])
        client.update_run(run_id, status="RUNNING")


def forget_open_runs() -> None:
    """The job was requeued: its runs are the requeued job's to end; system metrics stop."""
    _OPEN_RUNS.clear()
    while _MONITORS:
        _stop_monitor(_MONITORS.pop())


def _end_runs(status: str, reason: str | None) -> None:
    while _OPEN_RUNS:
        client, run_id = _OPEN_RUNS.pop()
        if given_up():  # the server that holds it is not answering: the run stays RUNNING there
            continue
        try:
            _end_run(client, run_id, status, reason)
        except Exception as err:
            if not is_unreachable(err):
                raise
            give_up()


def _end_run(client: MlflowClient, run_id: str, status: str, reason: str | None) -> None:
    current = client.get_run(run_id).info.status
    # a run the task ended stays as it is; Lightning ends an interrupted run FAILED: KILLED wins, and a
    # run its stopped sweep ended KILLED stays KILLED
    if current in ("FINISHED", "KILLED") or (status == "FINISHED" and current != "RUNNING"):
        return
    if reason:
        client.set_tag(run_id, "vidlab.error", reason[:5000])
    client.set_terminated(run_id, status)


def start_run(cfg: MlflowLoggerConfig, root: Path, output_dir: Path,
              extra_tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """A run for jobs outside Lightning (indexing, validation); the caller ends it."""
    experiment_id = ensure_experiment(cfg, root, extra_tags.get("task"))
    uri = resolve_tracking_uri(cfg.tracking_uri, root)
    client = MlflowClient(uri)
    with store_errors(uri):
        run = client.create_run(experiment_id, run_name=unique_run_name(client, experiment_id, cfg.run_name),
                                tags=run_tags(root, output_dir, extra_tags))
    _OPEN_RUNS.append((client, run.info.run_id))
    _monitor_system(cfg, uri, run.info.run_id, resumed=False)
    return client, run.info.run_id


def build_logger(cfg: MlflowLoggerConfig, root: Path, output_dir: Path, extra_tags: dict[str, str],
                 run_id: str | None = None) -> VidlabMLFlowLogger:
    """Lightning's MLflow logger on a new run, or on ``run_id`` (a resumed training continues its run)."""
    experiment_id = ensure_experiment(cfg, root, extra_tags.get("task"))
    uri = resolve_tracking_uri(cfg.tracking_uri, root)
    logger = VidlabMLFlowLogger(
        experiment_name=cfg.experiment_name,
        run_name=(cfg.run_name if run_id or rank_zero_only.rank > 0
                  else unique_run_name(MlflowClient(uri), experiment_id, cfg.run_name)),
        tracking_uri=uri,
        artifact_location=experiment_artifact_location(cfg, uri, root),
        tags=None if run_id else run_tags(root, output_dir, extra_tags),
        log_model=False,
        run_id=run_id,
    )
    if rank_zero_only.rank > 0:  # DDP: the run is rank 0's; the other ranks' experiment is Lightning's dummy
        return logger
    with store_errors(uri):
        _OPEN_RUNS.append((logger.experiment, logger.run_id))  # .experiment creates (or reopens) the run
    if run_id:
        logger.experiment.update_run(run_id, status="RUNNING")
    _monitor_system(cfg, uri, logger.run_id, resumed=bool(run_id))
    return logger


class RunIdInCheckpoint(Callback):
    """Stores the MLflow run id in every checkpoint, so resuming from it continues the same run."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if isinstance(trainer.logger, MLFlowLogger):
            checkpoint["mlflow_run_id"] = trainer.logger.run_id


def reusable_run(cfg: MlflowLoggerConfig, root: Path, run_id: str | None) -> str | None:
    """``run_id`` if a resumed training may continue it: a run of this store's experiment, not
    deleted, and not FINISHED (a finished run's result, params and config stay as they were; the
    training continues in a new run tagged ``vidlab.resumed_from``)."""
    if not run_id:
        return None
    client = MlflowClient(resolve_tracking_uri(cfg.tracking_uri, root))
    try:
        run = client.get_run(run_id)
    except Exception:  # another store, or purged: the resumed training gets a new run
        return None
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is None or run.info.experiment_id != experiment.experiment_id or run.info.lifecycle_stage != "active":
        return None
    if run.info.status == "FINISHED":
        logging.getLogger(__name__).info("MLflow: run %s of the checkpoint is FINISHED and stays as it is: the "
                                         "resumed training is a new run (tag vidlab.resumed_from)", run_id)
        return None
    return run_id
