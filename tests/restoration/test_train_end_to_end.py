"""Real runs of train.py (in this process, through its own ``main``): Lightning trainer, SQLite MLflow
store, Hydra multirun, restore. The finished run and the sweep are the session's (conftest)."""

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from vidlab.restore import restore_video
from vidlab.video import count_frames, iter_frames, write_video

from conftest import free_port, tiny_overrides, train, wait_until_answers


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    return client, client.search_runs([experiment.experiment_id], "tags.task = 'restoration'")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_tiny_run_logs_metrics_params_and_artifacts(tiny_run: Path, digits: Path, tmp_path: Path):
    client, runs = _runs(tiny_run)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "blend_unet-none-circular_stain"
    assert run.info.artifact_uri.startswith((tiny_run / "mlartifacts").as_uri())
    metrics = run.data.metrics
    for variant in ("stained", "raw", "smoothed"):
        for metric in ("psnr", "ssim", "psnr_stain", "psnr_content_stain", "flicker", "flicker_stain"):
            assert np.isfinite(metrics[f"test/{variant}/{metric}"]), (variant, metric)
            assert f"val/{variant}/{metric}" in metrics
    assert "test/smoothing_ema/flicker" in metrics and "train/loss_epoch" in metrics
    # the default fits the stain: nothing to learn about it
    assert not {"train/mask_bce", "train/inverse_l1"} & metrics.keys()
    for baseline in ("inpaint_telea", "inpaint_ns", "clip_minimum", "true_inverse"):
        assert np.isfinite(metrics[f"test/baseline_{baseline}/psnr_content_stain"]), baseline
    assert any(key.startswith("system/cpu_utilization") for key in metrics)
    # params are hyper-parameters; where the run lives, its name and unset values are tags
    params, tags = run.data.params, run.data.tags
    assert (params["model.base_channels"] == "6" and params["corruption.radius"] == "25"
            and params["optimizer.lr"] == "0.002")
    assert not [k for k in params if k.split(".")[0] in ("paths", "logger", "run_name", "ckpt_path", "task")]
    assert not [k for k, v in params.items() if v in ("None", "???") or v.startswith("/")]
    assert tags["config.paths.output_dir"] == str(tiny_run / "outputs/run") and tags["config.ckpt_path"] == "null"
    assert (tags["hydra_overrides"].startswith("debug=limit") and tags["mlflow.user"]
            and tags["mlflow.source.name"].endswith("train.py"))
    assert tags["mlflow.note.content"].startswith("`blend_unet` restoring `moving_digits` stained by `circular_stain`")
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.note.content"].startswith("Blind removal")
    contexts = {i.dataset.name: [] for i in run.inputs.dataset_inputs}
    for item in run.inputs.dataset_inputs:
        contexts[item.dataset.name] += [t.value for t in item.tags if t.key == "mlflow.data.context"]
    assert contexts == {"moving_digits": ["train", "val", "test"]}
    artifacts = _artifacts(client, run.info.run_id)
    assert {
        "checkpoints/best.ckpt", "config/config.yaml", "hydra/overrides.yaml", "previews/preview.gif",
        "previews/preview.mp4", "per_frame.png", "preview.png", "test/test_clips.csv", "test/comparison.csv",
        "test/comparison.md",
    } <= artifacts
    # a validation still per epoch (the image view's step slider)
    assert {p.split("+")[2] for p in artifacts
            if p.startswith("images/val~preview+step+") and p.endswith(".png")} == {"0", "1"}
    # the preview plays in a browser: H.264 in 4:2:0, its index (moov) before the media (mdat)
    preview = Path(client.download_artifacts(run.info.run_id, "previews/preview.mp4", str(tmp_path / "dl")))
    with av.open(str(preview)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    data = preview.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")
    first = next(iter_frames(preview))
    assert first.shape == (18 + 2 * 72, 4 * 2 * 128 + 3 * 2, 3)

    # restore a user's video with the trained checkpoint, blind, streamed in chunks
    clip = next(iter_frames(sorted(digits.rglob("*.mp4"))[0]))
    stained_video = write_video(tmp_path / "mine.mp4", [clip] * 11, fps=24)
    checkpoint = tiny_run / "outputs/run/checkpoints/best.ckpt"
    n = restore_video(checkpoint, stained_video, tmp_path / "restored.mp4", tmp_path / "pair.mp4", chunk=4)
    assert n == 11 == count_frames(tmp_path / "restored.mp4") == count_frames(tmp_path / "pair.mp4")
    assert next(iter_frames(tmp_path / "pair.mp4")).shape == (18 + 72, 2 * 128 + 2, 3)
    # the logged model, by run and by registered name, restores exactly as the checkpoint does
    expected = np.stack(list(iter_frames(tmp_path / "restored.mp4")))
    uri = f"sqlite:///{tiny_run}/mlruns.db"
    for reference in (f"runs:/{run.info.run_id}/model", "models:/stain_remover/1",
                      f"runs:/{run.info.run_id}/checkpoints/best.ckpt"):
        restore_video(reference, stained_video, tmp_path / "by_uri.mp4", chunk=4, tracking_uri=uri)
        np.testing.assert_array_equal(np.stack(list(iter_frames(tmp_path / "by_uri.mp4"))), expected, err_msg=reference)


def test_multirun_jobs_share_one_sweep_id_under_a_parent_with_its_summary(tiny_sweep: Path, tmp_path: Path):
    assert "#1 : " in (tiny_sweep / "sweep.log").read_text()  # Hydra's launcher announced both jobs
    _, runs = _runs(tiny_sweep)
    assert sorted(r.data.params["model.depth"] for r in runs) == ["2", "3"]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert sorted(r.data.tags["hydra_job_num"] for r in runs) == ["0", "1"]
    client = MlflowClient(f"sqlite:///{tiny_sweep}/mlruns.db")
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
    assert sorted(summary["override.model.depth"]) == [2, 3]
    assert summary["test/smoothed/psnr_content_stain"].notna().all()


def test_optuna_sweep_returns_the_metric(tmp_path: Path, digits: Path):
    train("-m", *tiny_overrides(tmp_path, digits), "hparams_search=restoration_optuna", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.sampler.n_startup_trials=1")
    results = OmegaConf.load(tmp_path / "outputs/sweep/optimization_results.yaml")
    assert np.isfinite(results.best_value) and set(results.best_params) >= {"model.base_channels", "optimizer.lr"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    children = client.search_runs([experiment.experiment_id], "tags.hydra_job_num != ''")
    assert len(children) == 2
    best = max(r.data.metrics["val/smoothed/psnr_content_stain"] for r in children)
    assert results.best_value == pytest.approx(best, abs=1e-3) or results.best_value >= best - 1e-3
    parent = client.search_runs([experiment.experiment_id], "tags.`vidlab.sweep_parent` = 'true'")[0]
    assert "sweep/optimization_results.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}


def test_logged_config_reproduces_the_run(tiny_run: Path, tmp_path: Path):
    """The session's run, trained again from its logged ``config/config.yaml`` into a store of its own."""
    client, (first,) = _runs(tiny_run)
    folder = Path(client.download_artifacts(first.info.run_id, "config", str(tmp_path / "logged")))
    train("--config-dir", str(folder), "--config-name", "config", "paths.output_dir=${hydra:runtime.output_dir}",
          f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/outputs/again",
          f"logger.tracking_uri=sqlite:///{tmp_path}/again.db", f"logger.artifact_location={tmp_path}/artifacts",
          "logger.register_as=null")
    again = MlflowClient(f"sqlite:///{tmp_path}/again.db").search_runs(
        [MlflowClient(f"sqlite:///{tmp_path}/again.db").get_experiment_by_name("restoration").experiment_id])[0]
    for key in ("test/raw/psnr_content_stain", "test/smoothed/flicker", "val/raw/psnr"):
        assert again.data.metrics[key] == pytest.approx(first.data.metrics[key], abs=1e-9), key


def test_shared_tracking_server_round_trip(tmp_path: Path, digits: Path):
    """About 60 s with two workers: a real ``mlflow server`` process starts (~20 s of its own imports)
    before the run can log to it over HTTP."""
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "server-artifacts"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{uri}/health", server, 90)
        train(*tiny_overrides(tmp_path, digits), "model.base_channels=4", f"logger.tracking_uri={uri}")
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
