"""Real runs of train.py: Lightning trainer, SQLite MLflow store, Hydra multirun, restore."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from vidlab.restore import restore_video
from vidlab.video import count_frames, iter_frames, write_video

from conftest import run_train, tiny_overrides


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    return client, client.search_runs([experiment.experiment_id], "tags.task = 'restoration'")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_tiny_run_logs_metrics_params_and_artifacts(tmp_path: Path):
    run_train(*tiny_overrides(tmp_path), "model.base_channels=6")
    client, runs = _runs(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "blend_unet-none-circular_stain"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    metrics = run.data.metrics
    for variant in ("stained", "raw", "smoothed"):
        for metric in ("psnr", "ssim", "psnr_stain", "psnr_content_stain", "flicker", "flicker_stain"):
            assert np.isfinite(metrics[f"test/{variant}/{metric}"]), (variant, metric)
            assert f"val/{variant}/{metric}" in metrics
    assert "test/smoothing_ema/flicker" in metrics and "train/loss_epoch" in metrics
    assert {"train/mask_bce", "train/inverse_l1"} <= metrics.keys()  # the blend model's stain losses
    for baseline in ("inpaint_telea", "inpaint_ns", "clip_minimum", "true_inverse"):
        assert np.isfinite(metrics[f"test/baseline_{baseline}/psnr_content_stain"]), baseline
    assert run.data.params["model.base_channels"] == "6"
    assert run.data.params["corruption.radius"] == "25"
    assert run.data.tags["hydra_overrides"].startswith("debug=limit")
    artifacts = _artifacts(client, run.info.run_id)
    assert {
        "checkpoints/best.ckpt", "config/config.yaml", "hydra/overrides.yaml", "previews/preview.gif",
        "previews/preview.mp4", "previews/per_frame.png", "test/test_clips.csv", "test/comparison.csv", "test/comparison.md",
    } <= artifacts
    preview = Path(client.download_artifacts(run.info.run_id, "previews/preview.mp4", str(tmp_path / "dl")))
    first = next(iter_frames(preview))
    assert first.shape == (18 + 2 * 72, 4 * 2 * 128 + 3 * 2, 3)

    # restore a user's video with the trained checkpoint, blind, streamed in chunks
    clip = next(iter_frames(sorted((tmp_path / "data").rglob("*.mp4"))[0]))
    stained_video = write_video(tmp_path / "mine.mp4", [clip] * 11, fps=24)
    checkpoint = tmp_path / "outputs/run/checkpoints/best.ckpt"
    n = restore_video(checkpoint, stained_video, tmp_path / "restored.mp4", tmp_path / "pair.mp4", chunk=4)
    assert n == 11 == count_frames(tmp_path / "restored.mp4") == count_frames(tmp_path / "pair.mp4")
    assert next(iter_frames(tmp_path / "pair.mp4")).shape == (18 + 72, 2 * 128 + 2, 3)


def test_multirun_jobs_share_one_sweep_id(tmp_path: Path):
    proc = run_train("-m", *tiny_overrides(tmp_path), "smoothing=none,ema", "model.base_channels=4")
    assert "#1 : " in proc.stdout or "#1 :" in proc.stderr
    _, runs = _runs(tmp_path)
    assert sorted(r.data.params["smoothing.name"] for r in runs) == ["ema", "none"]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert sorted(r.data.tags["hydra_job_num"] for r in runs) == ["0", "1"]


def test_sweep_parent_run_and_summary(tmp_path: Path):
    run_train("-m", *tiny_overrides(tmp_path), "smoothing=none,ema", "model.base_channels=4")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    parents = client.search_runs([experiment.experiment_id], "tags.`vidlab.sweep_parent` = 'true'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and parent.data.metrics["jobs"] == 2
    assert {c.data.tags["sweep_id"] for c in children} == {parent.data.tags["sweep_id"]}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} == {
        "sweep/sweep_summary.csv", "sweep/sweep_val_smoothed_psnr_content_stain.png"}
    summary = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep/sweep_summary.csv", str(tmp_path)))
    assert sorted(summary["override.smoothing"]) == ["ema", "none"]
    assert summary["test/smoothed/psnr_content_stain"].notna().all()


def test_four_parallel_jobs_on_a_fresh_store(tmp_path: Path):
    run_train("-m", *tiny_overrides(tmp_path), "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
              "seed=0,1,2,3", "model.base_channels=4")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    runs = client.search_runs([experiment.experiment_id], "tags.hydra_job_num != ''")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert "test/raw/psnr_content_stain" in run.data.metrics and "val/raw/psnr" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"checkpoints", "config", "previews", "test"}


def test_optuna_sweep_returns_the_metric(tmp_path: Path):
    run_train("-m", *tiny_overrides(tmp_path), "hparams_search=restoration_optuna", "hydra.sweeper.n_trials=3",
              "hydra.sweeper.sampler.n_startup_trials=2")
    results = OmegaConf.load(tmp_path / "outputs/sweep/optimization_results.yaml")
    assert np.isfinite(results.best_value) and set(results.best_params) >= {"model.base_channels", "optimizer.lr"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    children = client.search_runs([experiment.experiment_id], "tags.hydra_job_num != ''")
    assert len(children) == 3
    best = max(r.data.metrics["val/smoothed/psnr_content_stain"] for r in children)
    assert results.best_value == pytest.approx(best, abs=1e-3) or results.best_value >= best - 1e-3
    parent = client.search_runs([experiment.experiment_id], "tags.`vidlab.sweep_parent` = 'true'")[0]
    assert "sweep/optimization_results.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}


def test_logged_config_reproduces_the_run(tmp_path: Path):
    run_train(*tiny_overrides(tmp_path), "model.base_channels=4", "seed=0")
    client, runs = _runs(tmp_path)
    first = runs[0]
    folder = Path(client.download_artifacts(first.info.run_id, "config", str(tmp_path / "logged")))
    run_train("--config-dir", str(folder), "--config-name", "config", "paths.output_dir=${hydra:runtime.output_dir}",
              f"hydra.run.dir={tmp_path}/outputs/again")
    _, runs = _runs(tmp_path)
    again = next(r for r in runs if r.info.run_id != first.info.run_id)
    for key in ("test/raw/psnr_content_stain", "test/smoothed/flicker", "val/raw/psnr"):
        assert again.data.metrics[key] == pytest.approx(first.data.metrics[key], abs=1e-9), key


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shared_tracking_server_round_trip(tmp_path: Path):
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(0.5)
        run_train(*tiny_overrides(tmp_path), "model.base_channels=4", f"logger.tracking_uri={uri}")
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("restoration").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert np.isfinite(runs[0].data.metrics["test/raw/psnr_content_stain"])
        assert "config/config.yaml" in {a.path for a in client.list_artifacts(runs[0].info.run_id, "config")}
        assert any((tmp_path / "server-artifacts").rglob("config.yaml"))  # stored by the server, not the client
        assert not (tmp_path / "mlruns.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
