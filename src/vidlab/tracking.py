"""MLflow conventions in one place: store, experiment, run name, params, tags, artifacts.

The default store is a SQLite file inside the project with an explicit artifact folder (MLflow >= 3
refuses the old file store, and with SQLite the artifact root would otherwise be the cwd at creation).
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
from omegaconf import DictConfig, OmegaConf

from vidlab.schema import MlflowLoggerConfig


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


def ensure_experiment(cfg: MlflowLoggerConfig, root: Path) -> str:
    """Create the store and experiment once (with its artifact location); return its id."""
    uri = resolve_tracking_uri(cfg.tracking_uri, root)
    with _store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(cfg.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(cfg.experiment_name, artifact_location=_artifact_location(cfg, uri, root))


def _artifact_location(cfg: MlflowLoggerConfig, uri: str, root: Path) -> str | None:
    """Explicit for local stores; a tracking server chooses its own (``--artifacts-destination``)."""
    if uri.startswith(("http://", "https://")):
        return None
    return resolve_artifact_location(cfg.artifact_location, root)


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log a nested dict as flattened params, whole; a value over MLflow's own limit is cut to it
    and listed in the ``params_truncated`` tag (the full config is also logged as YAML). On a
    resumed run, values that differ from the first logging go to the ``vidlab.resumed_with`` tag."""
    flat = {k: v[:MAX_PARAM_VAL_LENGTH] for k, v in flatten(params).items()}
    too_long = sorted(k for k, v in flatten(params).items() if len(v) > MAX_PARAM_VAL_LENGTH)
    logged = client.get_run(run_id).data.params  # a resumed run has them: MLflow params never change
    changed = sorted(f"{k}={v}" for k, v in flat.items() if k in logged and logged[k] != v)
    if changed:
        client.set_tag(run_id, "vidlab.resumed_with", " ".join(changed)[:5000])
    items = [Param(k, v) for k, v in flat.items() if k not in logged]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    if too_long:
        client.set_tag(run_id, "params_truncated", ",".join(too_long))


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
    tags = {"output_dir": str(output_dir), **extra, **hydra_tags()}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


# Runs this process opened and has not ended: whatever stops the job, each gets an end status.
_OPEN_RUNS: list[tuple[MlflowClient, str]] = []


def end_open_runs(status: str, reason: str | None = None) -> None:
    """End every run this process opened that is still RUNNING with ``status`` (FINISHED, FAILED,
    KILLED), the one-line reason as the ``vidlab.error`` tag."""
    while _OPEN_RUNS:
        client, run_id = _OPEN_RUNS.pop()
        current = client.get_run(run_id).info.status
        # a run the task ended stays as it is; Lightning ends an interrupted run FAILED: KILLED wins
        if current == "FINISHED" or (status == "FINISHED" and current != "RUNNING"):
            continue
        if reason:
            client.set_tag(run_id, "vidlab.error", reason[:5000])
        client.set_terminated(run_id, status)


def start_run(cfg: MlflowLoggerConfig, root: Path, output_dir: Path, extra_tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """A run for jobs outside Lightning (indexing, validation); the caller ends it."""
    experiment_id = ensure_experiment(cfg, root)
    client = MlflowClient(resolve_tracking_uri(cfg.tracking_uri, root))
    run = client.create_run(experiment_id, run_name=cfg.run_name, tags=run_tags(root, output_dir, extra_tags))
    _OPEN_RUNS.append((client, run.info.run_id))
    return client, run.info.run_id


def build_logger(cfg: MlflowLoggerConfig, root: Path, output_dir: Path, extra_tags: dict[str, str],
                 run_id: str | None = None) -> VidlabMLFlowLogger:
    """Lightning's MLflow logger on a new run, or on ``run_id`` (a resumed training continues its run)."""
    ensure_experiment(cfg, root)
    logger = VidlabMLFlowLogger(
        experiment_name=cfg.experiment_name,
        run_name=cfg.run_name,
        tracking_uri=resolve_tracking_uri(cfg.tracking_uri, root),
        artifact_location=_artifact_location(cfg, resolve_tracking_uri(cfg.tracking_uri, root), root),
        tags=None if run_id else run_tags(root, output_dir, extra_tags),
        log_model=False,
        run_id=run_id,
    )
    _OPEN_RUNS.append((logger.experiment, logger.run_id))  # .experiment creates (or reopens) the run
    if run_id:
        logger.experiment.update_run(run_id, status="RUNNING")
    return logger


class RunIdInCheckpoint(Callback):
    """Stores the MLflow run id in every checkpoint, so resuming from it continues the same run."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if isinstance(trainer.logger, MLFlowLogger):
            checkpoint["mlflow_run_id"] = trainer.logger.run_id


def checkpoint_run_id(path: str) -> str | None:
    """Check ``ckpt_path`` is a readable Lightning checkpoint (before any work); its MLflow run id."""
    import torch

    from vidlab.errors import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path: no such file: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"ckpt_path: not a readable checkpoint: {path} ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
        raise ConfigError(f"ckpt_path: not a Lightning checkpoint of train.py: {path}")
    return checkpoint.get("mlflow_run_id")


def reusable_run(cfg: MlflowLoggerConfig, root: Path, run_id: str | None) -> str | None:
    """``run_id`` if it is a run of this store's experiment (a resumed training continues it), else None."""
    if not run_id:
        return None
    client = MlflowClient(resolve_tracking_uri(cfg.tracking_uri, root))
    try:
        run = client.get_run(run_id)
    except Exception:  # another store, or deleted: the resumed training gets a new run
        return None
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    return run_id if experiment is not None and run.info.experiment_id == experiment.experiment_id else None


def log_config(client: MlflowClient, run_id: str, cfg: DictConfig, output_dir: Path) -> None:
    """Params from the resolved config, and the config itself (plus Hydra's overrides) as YAML."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    log_params(client, run_id, resolved)
    path = output_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(resolved))
    client.log_artifact(run_id, str(path), "config")
    hydra_dir = output_dir / ".hydra"
    for name in ("overrides.yaml", "config.yaml", "hydra.yaml"):
        if (hydra_dir / name).exists():
            client.log_artifact(run_id, str(hydra_dir / name), "hydra")


def log_artifacts(client: MlflowClient, run_id: str, files: list[tuple[str, Path]]) -> None:
    """Log each ``(artifact folder, file)``."""
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder)


PARENT_RUN_FILE = ".mlflow_parent_run"
