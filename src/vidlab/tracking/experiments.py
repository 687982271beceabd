"""Where runs are kept: the tracking store and its artifact folder, resolved against the project, and
each experiment, created once with its description.

The default store is a SQLite file inside the project with an explicit artifact folder (MLflow >= 3
refuses the old file store, and with SQLite the artifact root would otherwise be the cwd at creation).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vidlab.schema import MlflowLoggerConfig
from vidlab.tracking.server import bound_retries, check_server, is_server


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


def experiment_artifact_location(cfg: MlflowLoggerConfig, uri: str, root: Path) -> str | None:
    """Explicit for local stores; a tracking server chooses its own (``--artifacts-destination``)."""
    if is_server(uri):
        return None
    return resolve_artifact_location(cfg.artifact_location, root)


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
    check_server(uri)
    bound_retries(uri, cfg.server_patience)
    with store_errors(uri), _store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(cfg.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        tags = {"mlflow.note.content": EXPERIMENT_DESCRIPTIONS[task]} if task in EXPERIMENT_DESCRIPTIONS else None
        return client.create_experiment(cfg.experiment_name,
                                        artifact_location=experiment_artifact_location(cfg, uri, root), tags=tags)
