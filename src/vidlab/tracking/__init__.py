"""MLflow conventions in one place: store, experiment, run name, params, tags, artifacts.

The default store is a SQLite file inside the project with an explicit artifact folder (MLflow >= 3
refuses the old file store, and with SQLite the artifact root would otherwise be the cwd at creation).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from omegaconf import DictConfig, OmegaConf

from vidlab.schema import MlflowLoggerConfig
from vidlab.tracking.params import log_params

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def resolve_tracking_uri(uri: str, root: Path) -> str:
    """Make a relative ``sqlite:///file.db`` absolute against ``root`` (the project)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((root / uri[len(prefix):]).resolve())
    return uri


def resolve_artifact_location(location: str, root: Path) -> str:
    if "://" in location:
        return location
    return (root / location).resolve().as_uri()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An OS lock beside a SQLite store while it is created or migrated: processes creating a fresh
    store at once corrupt it (``duplicate column name: step``). Released on any exit, even a kill."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


EXPERIMENT_DESCRIPTIONS = {  # task -> the experiment's description in the MLflow UI
    "restoration": "Blind removal of a synthetic stain from video frames (`train.py`): one run per "
                   "configuration, `-m` sweeps grouped under a parent run. Compare runs on "
                   "`test/smoothed/psnr_content_stain` and the top-level `preview.png` and `per_frame.png`.",
    "probe": "Anomaly probes on clip embeddings (`train.py task=probe`): one run per probe and "
             "embeddings folder, linked to its extraction run. Compare on `test/roc_auc` and `roc_curve.png`.",
    "embeddings": "Clip-embedding jobs (`extract.py`): indexing, index validation and extraction runs, "
                  "each with the index or embeddings it read and wrote.",
}


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """A store that cannot be used (not a SQLite database, read-only, full, an unreachable server)
    is one :class:`InputError` naming it, not SQLAlchemy's traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from vidlab.errors import InputError, one_line

    try:
        yield
    except (SQLAlchemyError, MlflowException, OSError) as err:  # OSError: its lock file beside it
        raise InputError(f"logger.tracking_uri: cannot use the MLflow store {uri}: {one_line(err)[:300]}") from err


def ensure_experiment(cfg: MlflowLoggerConfig, root: Path, task: str | None = None) -> str:
    """Create the store and experiment once (with its artifact location and, for a known ``task``,
    its description); return its id."""
    uri = resolve_tracking_uri(cfg.tracking_uri, root)
    with store_errors(uri), _store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(cfg.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        tags = {"mlflow.note.content": EXPERIMENT_DESCRIPTIONS[task]} if task in EXPERIMENT_DESCRIPTIONS else None
        return client.create_experiment(cfg.experiment_name, artifact_location=_artifact_location(cfg, uri, root), tags=tags)


def _artifact_location(cfg: MlflowLoggerConfig, uri: str, root: Path) -> str | None:
    """Explicit for local stores; a tracking server chooses its own (``--artifacts-destination``)."""
    if uri.startswith(("http://", "https://")):
        return None
    return resolve_artifact_location(cfg.artifact_location, root)


class VidlabMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, but params are logged whole (Lightning cuts them at 250 chars)."""

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any]) -> None:
        log_params(self.experiment, self.run_id, params)


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
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


# Runs this process opened and has not ended: whatever stops the job, each gets an end status.
_OPEN_RUNS: list[tuple[MlflowClient, str]] = []
_MONITORS: list[SystemMetricsMonitor] = []


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


@contextmanager
def best_effort(what: str, client: MlflowClient | None, run_id: str | None) -> Iterator[None]:
    """What only shows a run in the UI (images, figures, datasets, models, descriptions, system
    metrics) never fails a job that trained and tested: a failure is a warning in the log and, when
    the run can still be told, the ``vidlab.logging_failed`` tag."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any failure of the store, the network or a serializer
        from vidlab.errors import one_line

        logging.getLogger(__name__).warning("MLflow: could not log %s: %s", what, one_line(err))
        if client is not None and run_id is not None:
            with contextlib.suppress(Exception):
                current = client.get_run(run_id).data.tags.get("vidlab.logging_failed", "")
                client.set_tag(run_id, "vidlab.logging_failed", f"{current} {what}".strip()[:5000])


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


def end_open_runs(status: str, reason: str | None = None) -> None:
    """End every run this process opened that is still RUNNING with ``status`` (FINISHED, FAILED,
    KILLED), the reason as the ``vidlab.error`` tag; then system metrics stop (a monitor stuck on an
    unreachable server must not keep a run from its end status)."""
    try:
        _end_runs(status, reason)
    finally:
        while _MONITORS:
            _MONITORS.pop().finish()


def _end_runs(status: str, reason: str | None) -> None:
    while _OPEN_RUNS:
        client, run_id = _OPEN_RUNS.pop()
        current = client.get_run(run_id).info.status
        # a run the task ended stays as it is; Lightning ends an interrupted run FAILED: KILLED wins, and a
        # run its stopped sweep ended KILLED stays KILLED
        if current in ("FINISHED", "KILLED") or (status == "FINISHED" and current != "RUNNING"):
            continue
        if reason:
            client.set_tag(run_id, "vidlab.error", reason[:5000])
        client.set_terminated(run_id, status)


def start_run(cfg: MlflowLoggerConfig, root: Path, output_dir: Path, extra_tags: dict[str, str]) -> tuple[MlflowClient, str]:
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
        run_name=cfg.run_name if run_id or rank_zero_only.rank > 0 else unique_run_name(MlflowClient(uri), experiment_id, cfg.run_name),
        tracking_uri=uri,
        artifact_location=_artifact_location(cfg, uri, root),
        tags=None if run_id else run_tags(root, output_dir, extra_tags),
        log_model=False,
        run_id=run_id,
    )
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


def log_config(client: MlflowClient, run_id: str, cfg: DictConfig, output_dir: Path,
               groups: tuple[str, ...] | None = None) -> None:
    """Params from the resolved config (only the top-level ``groups`` this run reads, when given),
    and the config itself (plus Hydra's overrides) as YAML."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    log_params(client, run_id, resolved, groups)
    path = output_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(resolved))
    client.log_artifact(run_id, str(path), "config")
    hydra_dir = output_dir / ".hydra"
    for name in ("overrides.yaml", "config.yaml", "hydra.yaml"):
        if (hydra_dir / name).exists():
            client.log_artifact(run_id, str(hydra_dir / name), "hydra")


def log_figures(client: MlflowClient | None, run_id: str | None, figures: dict[str, Figure], folder: Path) -> list[Path]:
    """Save each figure as ``folder/<name>`` and log it with ``log_figure`` at the top level of the
    run, where MLflow's compare view shows the same name side by side across runs; then close it."""
    import matplotlib.pyplot as plt

    from vidlab.files import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        with atomic_path(folder / name) as tmp:
            figure.savefig(tmp, dpi=100)
        if client is not None:
            with best_effort(f"figure {name}", client, run_id):
                client.log_figure(run_id, figure, name)
        plt.close(figure)
        paths.append(folder / name)
    return paths


def log_artifacts(client: MlflowClient, run_id: str, files: list[tuple[str, Path]]) -> None:
    """Log each ``(artifact folder, file)``."""
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder)


PARENT_RUN_FILE = ".mlflow_parent_run"
