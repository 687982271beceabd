"""Real runs of train.py: Lightning trainer, SQLite MLflow store, Hydra multirun, restore."""

from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from conftest import run_train, tiny_overrides
from vidlab.restore import restore_video
from vidlab.video import count_frames, iter_frames, write_video


def _runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    experiment = client.get_experiment_by_name("restoration")
    return client, client.search_runs([experiment.experiment_id])


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
    assert run.info.status == "FINISHED" and run.info.run_name == "unet-masked-circular_stain"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    metrics = run.data.metrics
    for variant in ("stained", "raw", "smoothed"):
        for metric in ("psnr", "ssim", "psnr_stain", "psnr_content_stain", "flicker", "flicker_stain"):
            assert np.isfinite(metrics[f"test/{variant}/{metric}"]), (variant, metric)
            assert f"val/{variant}/{metric}" in metrics
    assert "test/smoothing_ema/flicker" in metrics and "train/loss_epoch" in metrics
    assert run.data.params["model.base_channels"] == "6"
    assert run.data.params["corruption.radius"] == "25"
    assert run.data.tags["hydra_overrides"].startswith("debug=limit")
    artifacts = _artifacts(client, run.info.run_id)
    assert {
        "checkpoints/best.ckpt", "config/config.yaml", "config/hydra/overrides.yaml", "previews/preview.gif",
        "previews/preview.mp4", "previews/per_frame.png", "test/test_clips.csv", "test/smoothing_comparison.csv",
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
