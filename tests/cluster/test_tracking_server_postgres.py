"""The docs' shared tracking server, run as written on a real PostgreSQL server: many writers at once,
a server restarted mid-run, a server that does not come back, and a signal while MLflow's client
retries. Each test is a real ``train.py`` or ``extract.py`` process, because the processes (their exit,
their timing, their signals) are the point."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import EXTRACT, ROOT, only_line, resume_checkpoint, tiny_overrides
from services import PASSWORD, Postgres, TrackingServer, postgres  # noqa: F401 - postgres is a fixture
from test_readme import documented_commands

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the services are Debian's packages")

SERVER = next(c for c in documented_commands() if c.startswith("mlflow server --backend-store-uri postgresql://"))
SWEEP = next(c for c in documented_commands() if "hydra/launcher=joblib" in c)
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}


@pytest.fixture(scope="module")
def server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:  # noqa: F811
    """The docs' command with the lab's names filled in: this database, a shared artifact folder."""
    folder = tmp_path_factory.mktemp("tracking server")
    command = (SERVER.replace("PASSWORD", PASSWORD).replace("dbhost:5432", f"127.0.0.1:{postgres.port}")
               .replace("/shared/mlflow-artifacts", shlex.quote(str(folder / "artifacts"))))
    tracking = TrackingServer(command, folder)
    tracking.artifacts = folder / "artifacts"
    tracking.start()
    yield tracking
    tracking.stop()


def _popen(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def _wait_for_epoch(uri: str, experiment: str, process: subprocess.Popen, seconds: float = 180) -> str:
    """The run's id once its first validation metric reached the server."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        runs = [r for r in _runs(uri, experiment) if "val/raw/psnr" in r.data.metrics]
        if runs:
            return runs[0].info.run_id
        time.sleep(1)
    raise AssertionError(f"no epoch of {experiment} reached the server within {seconds} s")


def _one_run_finished_with_every_epoch(uri: str, experiment: str, run_id: str, epochs: int) -> None:
    """The experiment holds the one run, FINISHED, with a validation of every epoch."""
    [run] = _runs(uri, experiment)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    history = MlflowClient(uri).get_metric_history(run_id, "val/raw/psnr")
    assert len({m.step for m in history}) == epochs, [m.step for m in history]


def _training(root: Path, digits: Path, uri: str, experiment: str, *more: str) -> subprocess.Popen:
    return _popen("train.py", *tiny_overrides(root, digits), "model.base_channels=4", f"logger.tracking_uri={uri}",
                  f"logger.experiment_name={experiment}", "logger.system_metrics_interval=1", *more)


def test_the_docs_server_on_postgresql_takes_a_joblib_sweep_and_an_extraction_at_once(
        server: TrackingServer, postgres: Postgres, digits: Path, small_index: Path, tmp_path: Path):  # noqa: F811
    """About 2 minutes on 2 cores: the docs' four-job joblib sweep (four processes) and an extraction,
    five writers on one server at once, as a lab's jobs would be."""
    sweep = _popen("train.py", *SWEEP.split()[2:], *tiny_overrides(tmp_path, digits), "model.base_channels=4",
                   f"logger.tracking_uri={server.uri}", "logger.experiment_name=lab-sweep")
    extraction = _popen("extract.py", f"index={small_index}", f"paths.root={tmp_path}",
                        f"hydra.run.dir={tmp_path}/extraction", *EXTRACT, f"logger.tracking_uri={server.uri}",
                        "logger.experiment_name=lab-extraction")
    for process in (sweep, extraction):
        code, out, err = _finish(process)
        assert code == 0, err[-5000:]
    client = MlflowClient(server.uri)
    jobs = [r for r in _runs(server.uri, "lab-sweep") if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["seed"] for r in jobs) == ["0", "1", "2", "3"]
    for run in [*_runs(server.uri, "lab-sweep"), *_runs(server.uri, "lab-extraction")]:
        assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags.get("vidlab.error"))
    for run in jobs:
        assert "test/raw/psnr_content_stain" in run.data.metrics and "train/loss_step" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"checkpoints", "config", "previews", "test"}
    [extracted] = _runs(server.uri, "lab-extraction")
    assert extracted.data.metrics and extracted.data.tags.get("stage") == "extract"
    assert len(list(server.artifacts.rglob("best.ckpt"))) == 4  # stored by the server, in its folder
    import psycopg

    with psycopg.connect(postgres.url()) as db, db.cursor() as cursor:  # the runs are PostgreSQL's rows
        cursor.execute("SELECT count(*) FROM runs r JOIN experiments e USING (experiment_id) "
                       "WHERE e.name IN ('lab-sweep', 'lab-extraction')")
        assert cursor.fetchone()[0] == 6  # the sweep's parent, its four jobs, the extraction


def test_a_server_restarted_within_its_patience_loses_nothing_of_the_run(
        server: TrackingServer, digits: Path, tmp_path: Path):
    """About 80 s: the server is down for 30 s in the middle of a training; the client's requests wait
    (``logger.server_patience``, 120 s) and go through once it is back: the same run, every epoch."""
    epochs = 6
    training = _training(tmp_path, digits, server.uri, "restart", f"trainer.max_epochs={epochs}")
    run_id = _wait_for_epoch(server.uri, "restart", training)
    with server.down():
        time.sleep(30)
        assert training.poll() is None  # waiting for the server, not failed
    code, out, err = _finish(training)
    assert code == 0, err[-5000:]
    _one_run_finished_with_every_epoch(server.uri, "restart", run_id, epochs)


def test_a_server_that_does_not_come_back_ends_the_training_in_one_line_and_it_resumes_into_the_same_run(
        server: TrackingServer, digits: Path, tmp_path: Path):
    """About 90 s: with ``logger.server_patience=10`` the training ends within seconds of its server
    going away, saying so and where its checkpoint is; resumed once the server is back, it continues
    the same run to the end."""
    epochs = 4
    training = _training(tmp_path, digits, server.uri, "gone", f"trainer.max_epochs={epochs}",
                         "logger.server_patience=10")
    run_id = _wait_for_epoch(server.uri, "gone", training)
    with server.down():
        stopped = time.time()
        code, out, err = _finish(training, timeout=120)
        took = time.time() - stopped
    assert code == 1 and took < 40, (code, took, err[-3000:])
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the MLflow server at {server.uri} stopped answering (retried for 10 s, logger.server_patience): "
        "its run stays RUNNING there until resumed; once it answers, resume with ckpt_path="), err[-3000:]
    checkpoint = resume_checkpoint(line, tmp_path / "outputs/run/checkpoints")
    assert _runs(server.uri, "gone")[0].info.status == "RUNNING"
    resumed = _training(tmp_path, digits, server.uri, "gone", f"trainer.max_epochs={epochs}", f"ckpt_path={checkpoint}")
    code, out, err = _finish(resumed)
    assert code == 0, err[-5000:]
    _one_run_finished_with_every_epoch(server.uri, "gone", run_id, epochs)


def test_sigterm_stops_a_training_at_once_while_its_client_retries_a_lost_server(
        server: TrackingServer, digits: Path, tmp_path: Path):
    """The client would retry for 120 s (``logger.server_patience``): SIGTERM ends the job within
    seconds, with its checkpoint, and nothing more is sent to the lost server."""
    training = _training(tmp_path, digits, server.uri, "signal", "trainer.max_epochs=50")
    _wait_for_epoch(server.uri, "signal", training)
    with server.down():
        time.sleep(8)  # the training's next request is being retried
        assert training.poll() is None
        training.send_signal(signal.SIGTERM)
        signalled = time.time()
        code, out, err = _finish(training, timeout=120)
        took = time.time() - signalled
    assert code == 128 + signal.SIGTERM and took < 15, (code, took, err[-3000:])
    line = err.strip().splitlines()[-1]
    assert line.startswith("stopped by SIGTERM: resume with ckpt_path="), err[-3000:]
    resume_checkpoint(line, tmp_path / "outputs/run/checkpoints")


AUTH_SERVER = next(c for c in documented_commands() if "--app-name basic-auth" in c)
ADMIN_PASSWORD = "vidlab-admin-password"


def _docs_auth_config() -> str:
    """The ``ini`` block of the docs' basic-auth recipe, as written."""
    page = (ROOT / "docs/sweeps-and-tracking.md").read_text()
    [config] = re.findall(r"```ini\n(.*?)```", page, re.DOTALL)
    return config


def test_basic_auth_on_postgresql_a_user_who_may_edit_trains_one_who_may_read_gets_one_line(
        postgres: Postgres, digits: Path, tmp_path: Path):  # noqa: F811
    """About a minute: the docs' basic-auth server, its users in PostgreSQL too. The admin adds two users
    and lets one edit the experiment; the default permission (READ) leaves the other refused in one line,
    before any work."""
    import requests

    postgres.create_database("mlflow_auth")
    config = tmp_path / "mlflow-auth.ini"
    config.write_text(_docs_auth_config().replace("PASSWORD@dbhost:5432", f"{PASSWORD}@127.0.0.1:{postgres.port}")
                      .replace("ADMIN_PASSWORD", ADMIN_PASSWORD))
    command = (AUTH_SERVER.replace("/shared/mlflow-auth.ini", shlex.quote(str(config)))
               .replace("LAB_SECRET", secrets.token_hex(16)).replace("PASSWORD", PASSWORD)
               .replace("dbhost:5432", f"127.0.0.1:{postgres.port}")
               .replace("/shared/mlflow-artifacts", shlex.quote(str(tmp_path / "artifacts"))))
    server = TrackingServer(command, tmp_path)
    server.start()
    try:
        admin = ("admin", ADMIN_PASSWORD)
        for user in ("alice", "bob"):
            requests.post(f"{server.uri}/api/2.0/mlflow/users/create",
                          json={"username": user, "password": f"{user}-password"},
                          auth=admin, timeout=30).raise_for_status()
        made = requests.post(f"{server.uri}/api/2.0/mlflow/experiments/create", json={"name": "team"}, auth=admin,
                             timeout=30)
        made.raise_for_status()
        requests.post(f"{server.uri}/api/3.0/mlflow/users/permissions/grant", auth=admin, timeout=30, json={
            "username": "alice", "resource_type": "experiment", "resource_id": made.json()["experiment_id"],
            "permission": "EDIT"}).raise_for_status()
        outcomes = {}
        for user in ("alice", "bob"):
            env = {**ENV, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": f"{user}-password"}
            outcomes[user] = subprocess.run(
                [sys.executable, str(ROOT / "train.py"), *tiny_overrides(tmp_path / user, digits),
                 "model.base_channels=4", f"logger.tracking_uri={server.uri}", "logger.experiment_name=team"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert outcomes["alice"].returncode == 0, outcomes["alice"].stderr[-3000:]
        refused = outcomes["bob"]
        assert refused.returncode == 1 and only_line(refused.stderr).startswith(
            f"error: logger.tracking_uri: cannot use the MLflow store {server.uri}: "), refused.stderr[-3000:]
        assert "PERMISSION_DENIED" in refused.stderr or "Permission denied" in refused.stderr
        assert not (tmp_path / "bob/outputs/run/checkpoints").exists()
        client = MlflowClient(server.uri)  # as the admin
        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
        try:
            runs = client.search_runs([made.json()["experiment_id"]])
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        assert [r.info.status for r in runs] == ["FINISHED"] and "/alice/" in runs[0].data.tags["output_dir"]
    finally:
        server.stop()
