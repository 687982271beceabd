"""The anomaly probe: real train.py runs on extraction folders written in the extraction format."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from vidlab.probe import metrics as pm

from conftest import run_train


def write_extraction(folder: Path, seed: int = 0, shift: float = 2.0, shuffle: bool = False, invalid: int = 0) -> Path:
    """An extraction folder (embeddings, labels, valid, manifest, index) with Gaussian embeddings."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    splits, index_rows = {}, []
    for split, n in (("train", 240), ("val", 80), ("test", 80)):
        y = (rng.random(n) < 0.3).astype(np.int8)  # imbalanced, as anomalies are
        x = rng.normal(size=(n, 16)).astype(np.float32)
        x[:, :4] += shift * y[:, None]
        if shuffle:
            y = rng.permutation(y)
        valid = np.ones(n, bool)
        if invalid:
            valid[:invalid] = False
            x[:invalid] = 1e4 * (1 - 2 * y[:invalid, None])  # garbage that would wreck the probe if used
        for kind, arr in (("embeddings", x.astype(np.float16)), ("labels", y), ("valid", valid)):
            np.save(folder / f"{kind}_{split}.npy", arr)
        splits[split] = {"rows": n, "files": {k: f"{k}_{split}.npy" for k in ("embeddings", "labels", "valid")}}
        for i in range(n):
            index_rows.append([split, int(y[i]), "c", f"v{split}{i // 4}.mp4", i % 4, 16 * (i % 4), 16 * (i % 4) + 32, 32, 16, 30.0, 96])
    pd.DataFrame(index_rows, columns="split,y,category,path,clip_idx,start_frame,end_frame,clip_len,stride,fps,n_frames".split(",")).to_csv(folder / "index.csv", index=False)
    manifest = {"backbone": "torchvision/test", "embedding_dim": 16, "dtype": "float16", "splits": splits,
                "index": {"path": str(folder / "index.csv")}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _probe(root: Path, embeddings: Path, *extra: str):
    return run_train("task=probe", f"embeddings={embeddings}", f"paths.root={root}", f"hydra.run.dir={root}/run",
                     "trainer.max_epochs=15", "probe.batch_size=32", "optimizer.lr=0.02", *extra)


def _run(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    return client, client.search_runs([client.get_experiment_by_name("probe").experiment_id])[0]


def test_separable_embeddings_are_separated(tmp_path: Path):
    folder = write_extraction(tmp_path / "emb")
    _probe(tmp_path, folder)
    client, run = _run(tmp_path)
    assert run.data.metrics["test/roc_auc"] > 0.95 and run.data.metrics["val/roc_auc"] > 0.95
    assert run.data.metrics["test/balanced_accuracy"] > 0.85
    assert run.data.tags["backbone"] == "torchvision/test" and run.data.tags["embeddings_dir"] == str(folder)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "probe")} | {a.path for a in client.list_artifacts(run.info.run_id, "probe/plots")}
    assert {"probe/test_scores.csv", "probe/plots/roc.png", "probe/plots/pr.png", "probe/plots/confusion.png"} <= artifacts
    scores = pd.read_csv(tmp_path / "run/probe/test_scores.csv")
    assert len(scores) == 80 and {"path", "start_frame", "score", "y"} <= set(scores.columns)


def test_shuffled_labels_give_chance(tmp_path: Path):
    _probe(tmp_path, write_extraction(tmp_path / "emb", shuffle=True), "probe=mlp")
    _, run = _run(tmp_path)
    assert 0.3 < run.data.metrics["test/roc_auc"] < 0.7


def test_invalid_rows_are_left_out_and_counted(tmp_path: Path):
    _probe(tmp_path, write_extraction(tmp_path / "emb", invalid=20), "logger=none")
    scores = pd.read_csv(tmp_path / "run/probe/test_scores.csv")
    assert len(scores) == 60 and scores.split_row.min() == 20
    proc = _probe(tmp_path, tmp_path / "emb", "logger=none")
    assert "rows_invalid_left_out: 60.0000" in proc.stdout  # 20 per split


def test_broken_manifest_is_a_clear_error(tmp_path: Path):
    folder = write_extraction(tmp_path / "emb")
    np.save(folder / "embeddings_val.npy", np.zeros((80, 8), np.float16))
    proc = run_train("task=probe", f"embeddings={folder}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/r", check=False)
    assert proc.returncode == 1 and "embeddings_val.npy is (80, 8) float16, the manifest says (80, 16)" in proc.stderr


def test_clip_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9])
    # positives 0.35, 0.8, 0.9 vs negatives 0.1, 0.4, 0.4: pairs won 1 + 3 + 3 = 7 of 9
    assert pm.roc_auc(y, s) == pytest.approx(7 / 9)
    assert pm.roc_auc(y, np.full(6, 0.5)) == pytest.approx(0.5)
    # ranked: .9(+) .8(+) .4(-,-) .35(+) .1(-): AP = 1/3*1 + 1/3*1 + 1/3*(3/5)
    assert pm.average_precision(y, s) == pytest.approx((1 + 1 + 0.6) / 3)
    predicted = s >= 0.35
    assert pm.balanced_accuracy(y, predicted) == pytest.approx((1 + 1 / 3) / 2)
    assert pm.f1(y, predicted) == pytest.approx(2 * 3 / (2 * 3 + 2 + 0))


def test_frame_level_auc_matches_hand_computation(tmp_path: Path):
    annotations = tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    annotations.write_text("Fight001_x264.mp4  Fighting  4  7  -1  -1\nNormal_Videos_001_x264.mp4  Normal  -1  -1  -1  -1\n")
    clips = pd.DataFrame({  # an unlisted anomalous video is left out; an unlisted normal one has no anomalous frame
        "path": ["x/Fight001_x264.mp4"] * 3 + ["y/Normal_Videos_001_x264.mp4"] * 2 + ["z/unannotated.mp4", "w/Normal_Videos_009_x264.mp4"],
        "n_frames": [10, 10, 10, 6, 6, 6, 4],
        "start_frame": [0, 4, 6, 0, 2, 0, 0],
        "end_frame": [4, 8, 10, 4, 6, 4, 4],
        "score": [0.2, 0.9, 0.5, 0.1, 0.3, 0.99, 0.6],
        "y": [1, 1, 1, 0, 0, 1, 0],
    })
    # Fight001 frames 0-3: 0.2; 4-5: 0.9; 6-7: mean(0.9, 0.5) = 0.7; 8-9: 0.5 -> anomalous frames 4..7
    # Normal frames 0-1: 0.1; 2-3: mean(0.1, 0.3) = 0.2; 4-5: 0.3 -> all normal
    fight = [0.2] * 4 + [0.9] * 2 + [0.7] * 2 + [0.5] * 2
    normal = [0.1] * 2 + [0.2] * 2 + [0.3] * 2
    np.testing.assert_allclose(pm.frame_scores(clips.iloc[:3], 10), fight)
    positives = fight[4:8]
    negatives = fight[:4] + fight[8:] + normal + [0.6] * 4
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    auc, videos = pm.frame_level_auc(clips, pm.read_temporal_annotations(annotations))
    assert videos == 3 and auc == pytest.approx(wins / (len(positives) * len(negatives)))


@pytest.mark.parametrize("damage,message", [
    ("labels", "train labels must be 0 or 1, found [7]"),
    ("nan", "of the train split of"),
    ("json", "manifest.json is not valid JSON"),
    ("key", "is not an extraction manifest (missing or wrong 'embedding_dim')"),
    ("truncated", "cannot read"),
    ("one_class", "has only label 0: ROC-AUC needs both classes"),
])
def test_bad_probe_input_is_one_line_before_training(tmp_path: Path, damage: str, message: str):
    folder = write_extraction(tmp_path / "emb")
    if damage == "labels":
        labels = np.load(folder / "labels_train.npy")
        labels[3] = 7
        np.save(folder / "labels_train.npy", labels)
    elif damage == "nan":
        x = np.load(folder / "embeddings_train.npy")
        x[5, 2] = np.nan
        np.save(folder / "embeddings_train.npy", x)
    elif damage == "json":
        (folder / "manifest.json").write_text("{not json")
    elif damage == "key":
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["embedding_dim"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "truncated":
        data = (folder / "embeddings_test.npy").read_bytes()
        (folder / "embeddings_test.npy").write_bytes(data[: len(data) // 2])
    else:
        np.save(folder / "labels_val.npy", np.zeros(80, np.int8))
    proc = run_train("task=probe", f"embeddings={folder}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/r", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: embeddings:") and message in line
    assert not (tmp_path / "r/checkpoints").exists()
