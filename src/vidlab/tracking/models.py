"""Trained models as MLflow models: logged with a signature and a real input example (the run's
Models column; ``runs:/<run id>/model`` and, when registered, ``models:/<name>/<version>``), and
the URIs a command accepts resolved to local files."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import mlflow.sklearn
import numpy as np
from mlflow.environment_variables import MLFLOW_EXPERIMENT_ID, MLFLOW_TRACKING_URI

from vidlab.errors import ConfigError, one_line
from vidlab.schema import MlflowLoggerConfig

MODEL_ARTIFACT = "model"


@contextmanager
def tracking_uri(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent model API reads the process-wide store and experiment (a logged model is
    created in the active experiment, else in "Default" under the cwd): point both at ``uri`` and
    ``experiment_id`` for a block, then put back exactly what was there (``set_tracking_uri`` also
    writes ``MLFLOW_TRACKING_URI``)."""
    from mlflow.tracking._tracking_service import utils

    saved_env = {name: os.environ.get(name) for name in (MLFLOW_TRACKING_URI.name, MLFLOW_EXPERIMENT_ID.name)}
    saved_uri = utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    if experiment_id is not None:
        os.environ[MLFLOW_EXPERIMENT_ID.name] = experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the packages the model needs: given, MLflow does not infer them by
    importing the model in a subprocess (seconds per run)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in packages]


def log_model(cfg: MlflowLoggerConfig, uri: str, run_id: str, model: Any, example: np.ndarray,
              flavor: str = "pytorch") -> str:
    """Log ``model`` (a torch module, or a scikit-learn estimator with ``flavor="sklearn"``) as the
    run's ``model``, registered as ``logger.register_as`` when set; returns its ``models:/`` URI."""
    experiment_id = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    pickle_warning = logging.getLogger("mlflow.pytorch")  # our own classes, pickled on purpose (restore's docstring)
    level = pickle_warning.level
    pickle_warning.setLevel(logging.ERROR)
    try:
        with tracking_uri(uri, experiment_id):
            if flavor == "pytorch":
                info = mlflow.pytorch.log_model(model, name=MODEL_ARTIFACT, input_example=example, run_id=run_id,
                                                # torch.export cannot trace no_grad blocks
                                                serialization_format="pickle",
                                                registered_model_name=cfg.register_as,
                                                pip_requirements=_requirements("torch", "lightning", "numpy"))
            else:
                info = mlflow.sklearn.log_model(model, name=MODEL_ARTIFACT, input_example=example, run_id=run_id,
                                                registered_model_name=cfg.register_as,
                                                pyfunc_predict_fn="predict_proba",
                                                pip_requirements=_requirements("scikit-learn", "numpy"))
    finally:
        pickle_warning.setLevel(level)
    return info.model_uri


def _check_store(reference: str, uri: str) -> None:
    """A SQLite store that does not exist is refused: opening it would create an empty one."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"{reference}: no MLflow store at {uri} (set --tracking-uri or MLFLOW_TRACKING_URI)")


@contextmanager
def downloaded(reference: str, uri: str) -> Iterator[Path]:
    """A local copy of a file a run logged (``runs:/<run id>/checkpoints/best.ckpt``), removed after
    the block; a reference the store does not hold is one :class:`ConfigError` line."""
    _check_store(reference, uri)
    with tracking_uri(uri), tempfile.TemporaryDirectory(prefix="vidlab-") as folder:
        try:
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=reference, dst_path=folder))
        except Exception as err:  # noqa: BLE001 (MlflowException, OSError: the store says why in one line)
            raise ConfigError(f"{reference}: not found in {uri} ({one_line(err)[:300]})") from None
        yield path


def load_pytorch_model(reference: str, uri: str) -> Any:
    """A logged PyTorch model (``runs:/<run id>/model``, ``models:/<name>/<version>``) on the CPU;
    a reference the store does not hold, or another flavour, is one :class:`ConfigError` line."""
    _check_store(reference, uri)
    with tracking_uri(uri):
        try:
            return mlflow.pytorch.load_model(reference, map_location="cpu")
        except Exception as err:  # noqa: BLE001 (MlflowException, pickle errors: one line says which)
            hint = ("; a model pickled by another vidlab version restores from its run's checkpoint instead: "
                    "runs:/<run id>/checkpoints/best.ckpt") if isinstance(err, (AttributeError, ImportError)) else ""
            raise ConfigError(f"{reference}: no PyTorch model of vidlab in {uri} "
                              f"({one_line(err)[:300]}{hint})") from None
