"""vidlab's MLflow conventions on a real SQLite store: which config values are params, unique run
names, best-effort logging, the fluent API's global state put back, a mask model's run."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from vidlab import tracking
from vidlab.tracking.models import tracking_uri
from vidlab.tracking.params import split_config

from conftest import tiny_overrides, train


def test_hyper_parameters_are_params_and_the_rest_config_tags():
    params, tags = split_config({
        "seed": 0, "model": {"depth": 3, "_target_": "vidlab.X", "norm": None}, "paths": {"root": "/p"},
        "logger": {"run_name": "r"}, "run_name": "r", "ckpt_path": None, "dataset": {"path": "/videos", "fps": 24,
                                                                                    "cache_dir": "data/x"},
        "backbone": {"weights": "???"}, "scheduler": {}, "extraction": {"batch_size": 8},
    })
    assert params == {"seed": "0", "model.depth": "3", "dataset.fps": "24", "extraction.batch_size": "8"}
    assert tags == {"config.model._target_": "vidlab.X", "config.model.norm": "null", "config.paths.root": "/p",
                    "config.logger.run_name": "r", "config.run_name": "r", "config.ckpt_path": "null",
                    "config.dataset.path": "/videos", "config.dataset.cache_dir": "data/x", "config.scheduler": "null"}
    params, tags = split_config({"backbone": {"name": "r3d_18"}, "extraction": {"batch_size": 8}}, groups=("backbone",))
    assert params == {"backbone.name": "r3d_18"} and tags == {"config.extraction.batch_size": "8"}


def test_run_names_are_made_unique_within_an_experiment(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    names = []
    for _ in range(3):
        names.append(tracking.unique_run_name(client, experiment, "unet-none_50%"))
        client.create_run(experiment, run_name=names[-1])
    assert names == ["unet-none_50%", "unet-none_50%-2", "unet-none_50%-3"]
    assert tracking.unique_run_name(client, experiment, "unet-none") == "unet-none"  # a prefix of taken names is free


def test_what_only_shows_a_run_never_fails_the_job(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    run = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri()))
    for what in ("model", "datasets"):
        with tracking.best_effort(what, client, run.info.run_id):
            client.log_inputs(run.info.run_id, datasets=["not a dataset"])  # MLflow refuses it
    assert client.get_run(run.info.run_id).data.tags["vidlab.logging_failed"] == "model datasets"
    assert "MLflow: could not log model" in caplog.text


def test_the_fluent_tracking_uri_is_put_back_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    before = mlflow.get_tracking_uri()
    with tracking_uri(f"sqlite:///{tmp_path}/x.db", "7"):
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/x.db" and os.environ["MLFLOW_EXPERIMENT_ID"] == "7"
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ
    assert mlflow.get_tracking_uri() == before
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///somewhere.db")
    with tracking_uri(f"sqlite:///{tmp_path}/x.db"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///somewhere.db"


def test_a_model_that_needs_the_mask_finishes_without_an_mlflow_model(tmp_path: Path, digits: Path):
    train(*tiny_overrides(tmp_path, digits), "model=unet", "model.mask_channel=true", "dataset.train_videos=4",
              "dataset.val_videos=2", "dataset.test_videos=2")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("restoration").experiment_id])[0]
    assert run.info.status == "FINISHED" and "vidlab.logging_failed" not in run.data.tags
    assert not run.outputs.model_outputs and "checkpoints" in {a.path for a in client.list_artifacts(run.info.run_id)}
