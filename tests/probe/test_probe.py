"""The anomaly probes: train.py task=probe (in this process, through its own ``main``) and real Lightning
fits on extraction folders written in the extraction format, scored with scikit-learn."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from vidlab.embeddings.manifest import IndexRef, Manifest, SplitInfo
from vidlab.probe import metrics as pm
from vidlab.probe.config import PROBES, validate_probe
from vidlab.probe.data import check_manifest, load_splits
from vidlab.probe.fitting import FitContext
from vidlab.trainer import checked_optimizer, trainer_kwargs

from conftest import ROOT, only_line, train

ROWS = (("train", 240), ("val", 80), ("test", 80))


def write_extraction(folder: Path, seed: int = 0, shift: float = 2.0, shuffle: bool = False, invalid: int = 0,
                     dim: int = 16, boundary: str = "linear", rows: tuple = ROWS) -> Path:
    """An extraction folder (embeddings, labels, valid, manifest, index) with Gaussian embeddings whose
    class differs along ``boundary``: ``linear`` (shifted in 4 dims), ``spread`` (a small shift in every
    dim: far apart in high dimension), or ``xor`` (the sign of x0 * x1: no linear rule does better than chance)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    splits, index_rows = {}, []
    for split, n in rows:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        if boundary == "xor":
            y = (x[:, 0] * x[:, 1] > 0).astype(np.int8)
        else:
            y = (rng.random(n) < 0.3).astype(np.int8)  # imbalanced, as anomalies are
            x[:, : (dim if boundary == "spread" else 4)] += shift * y[:, None]
        if shuffle:
            y = rng.permutation(y)
        valid = np.ones(n, bool)
        if invalid:
            valid[:invalid] = False
            x[:invalid] = 1e4 * (1 - 2 * y[:invalid, None])  # garbage that would wreck the probe if used
        for kind, arr in (("embeddings", x.astype(np.float16)), ("labels", y), ("valid", valid)):
            np.save(folder / f"{kind}_{split}.npy", arr)
        splits[split] = SplitInfo(n, {k: f"{k}_{split}.npy" for k in ("embeddings", "labels", "valid")})
        for i in range(n):
            index_rows.append([split, int(y[i]), "c", f"v{split}{i // 4}.mp4", i % 4, 16 * (i % 4), 16 * (i % 4) + 32,
                               32, 16, 30.0, 96])
    pd.DataFrame(index_rows, columns=("split,y,category,path,clip_idx,start_frame,end_frame,clip_len,"
                                      "stride,fps,n_frames").split(",")).to_csv(folder / "index.csv", index=False)
    Manifest(backbone="torchvision/test", embedding_dim=dim, dtype="float16", splits=splits,
             index=IndexRef(str(folder / "index.csv")), mlflow_run_id="0123456789abcdef").write(folder)
    return folder


def fit_probe(name: str, folder: Path, output_dir: Path, *overrides: str):
    """A probe built from the composed config and fitted in this process (a real Lightning Trainer),
    with the splits it was fitted on: what task=probe does before scoring."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["task=probe", f"embeddings={folder}", f"probe={name}",
                                          f"paths.output_dir={output_dir}", *overrides])
    spec = validate_probe(cfg)
    L.seed_everything(spec.seed)
    splits = load_splits(folder, check_manifest(folder))
    probe = PROBES.build(spec.probe)
    output_dir.mkdir(parents=True, exist_ok=True)
    selected = probe.fit(splits, FitContext(trainer_kwargs(cfg), checked_optimizer(cfg), None, output_dir, spec.seed))
    return probe, splits, selected


def held_out_auc(probe, splits, split: str = "test") -> float:
    return pm.classification_metrics(splits[split].y, probe.scores(splits[split]), 0.5)["roc_auc"]


def _probe(root: Path, embeddings: Path, *extra: str):
    return train("task=probe", f"embeddings={embeddings}", f"paths.root={root}", f"hydra.run.dir={root}/run", *extra)


def mlflow_model(root: Path, reference: str):
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns.db")
    try:
        return mlflow.pyfunc.load_model(reference)
    finally:
        mlflow.set_tracking_uri(None)


def _run(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    return client, client.search_runs([client.get_experiment_by_name("probe").experiment_id])[0]


def test_default_probe_separates_high_dimensional_embeddings_with_few_rows(tmp_path: Path):
    """Fewer rows than dimensions (400 rows, 1024 dims), a nearest-centroid rule separates them: the
    default probe (logistic, C chosen on val) must too, from one train.py command."""
    folder = write_extraction(tmp_path / "emb", dim=1024, boundary="spread", shift=0.25)
    _probe(tmp_path, folder)
    client, run = _run(tmp_path)
    assert run.data.metrics["test/roc_auc"] > 0.95 and run.data.metrics["val/roc_auc"] > 0.95
    assert run.data.metrics["test/balanced_accuracy"] > 0.85 and run.data.metrics["probe/C"] > 0
    assert run.info.run_name == "logistic-emb-test" and run.data.tags["probe"] == "logistic"
    assert run.data.tags["backbone"] == "torchvision/test" and run.data.tags["embeddings_dir"] == str(folder)
    assert run.data.tags["extraction_run_id"] == "0123456789abcdef" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.note.content"].startswith(
        f"Probe `logistic` on the torchvision/test embeddings in `{folder}`.")
    artifacts = {a.path for folder in (None, "probe") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"probe/test_scores.csv", "probe/c_grid.csv", "roc.png", "pr.png", "confusion.png",
            "score_curves.png"} <= artifacts
    assert not [k for k in run.data.params if k.split(".")[0] in ("paths", "logger", "embeddings", "run_name")]
    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset
              for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "val"] and {d.name for d in inputs.values()} == {"emb"}
    scores = pd.read_csv(tmp_path / "run/probe/test_scores.csv")
    assert len(scores) == 80 and {"path", "start_frame", "score", "y"} <= set(scores.columns)
    # the logged model scores raw embeddings as the run did (its standardisation included)
    model = mlflow_model(tmp_path, f"runs:/{run.info.run_id}/model")
    raw = np.load(folder / "embeddings_test.npy")[scores.split_row.to_numpy()].astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.predict(raw))[:, 1], scores.score, rtol=1e-5, atol=1e-6)
    grid = pd.read_csv(tmp_path / "run/probe/c_grid.csv")
    assert grid.converged.all() and grid.C.is_monotonic_increasing and run.data.metrics["probe/C"] in set(grid.C)


def test_run_names_are_unique_per_embeddings_folder(tmp_path: Path):
    for parent in ("a", "b"):
        _probe(tmp_path, write_extraction(tmp_path / parent / "swin", rows=ROWS), "probe.C_grid=[1.0]")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    names = sorted(r.info.run_name for r in client.search_runs([client.get_experiment_by_name("probe").experiment_id]))
    assert names[0] == "logistic-swin-test" and names[1].startswith("logistic-swin-test@") and len(set(names)) == 2


@pytest.mark.parametrize("probe", ["logistic", "mlp"])
def test_shuffled_labels_give_chance(tmp_path: Path, probe: str):
    probe, splits, _ = fit_probe(probe, write_extraction(tmp_path / "emb", shuffle=True,
                                                         rows=(("train", 400), ("val", 200), ("test", 400))),
                                 tmp_path / "out")
    assert 0.4 < held_out_auc(probe, splits) < 0.6
    # what MLflow logs scores raw embeddings as the probe scores standardised ones
    test, scaler = splits["test"], splits["train"].scaler
    model, flavor = probe.mlflow_model(scaler)
    raw = scaler.inverse_transform(test.x).astype(np.float32)
    logged = model.predict_proba(raw)[:, 1] if flavor == "sklearn" else model(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(logged, probe.scores(test), rtol=1e-4, atol=1e-5)


def test_mlp_beats_logistic_on_a_nonlinear_boundary_and_keeps_up_on_a_linear_one(tmp_path: Path):
    rows = (("train", 1000), ("val", 300), ("test", 400))
    xor = write_extraction(tmp_path / "xor", boundary="xor", rows=rows)
    linear = write_extraction(tmp_path / "linear", shift=1.0, rows=rows)
    auc = {(probe, data.name): held_out_auc(*fit_probe(probe, data, tmp_path / probe / data.name)[:2])
           for probe in ("logistic", "mlp") for data in (xor, linear)}
    assert auc["logistic", "xor"] < 0.65 and auc["mlp", "xor"] > 0.9
    assert auc["mlp", "linear"] > auc["logistic", "linear"] - 0.03 and auc["logistic", "linear"] > 0.85  # Bayes: 0.92


def test_invalid_rows_are_left_out_and_counted(tmp_path: Path):
    _probe(tmp_path, write_extraction(tmp_path / "emb", invalid=20), "logger=none", "probe=mlp")
    scores = pd.read_csv(tmp_path / "run/probe/test_scores.csv")
    assert len(scores) == 60 and scores.split_row.min() == 20
    proc = _probe(tmp_path, tmp_path / "emb", "logger=none")
    assert "rows_invalid_left_out: 60.0000" in proc.stdout  # 20 per split


def test_broken_manifest_is_a_clear_error(tmp_path: Path):
    folder = write_extraction(tmp_path / "emb")
    np.save(folder / "embeddings_val.npy", np.zeros((80, 8), np.float16))
    proc = train("task=probe", f"embeddings={folder}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/r",
                 check=False)
    assert proc.returncode == 1 and "embeddings_val.npy is (80, 8) float16, the manifest says (80, 16)" in proc.stderr


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9])
    # the threshold with the best balanced accuracy: >= 0.8 gives (2/3 + 1) / 2, >= 0.35 gives (1 + 1/3) / 2
    assert pm.best_threshold(y, s) == pytest.approx(0.8)
    got = pm.classification_metrics(y, s, 0.35)
    # positives 0.35, 0.8, 0.9 vs negatives 0.1, 0.4, 0.4: pairs won 1 + 3 + 3 = 7 of 9
    assert got["roc_auc"] == pytest.approx(7 / 9)
    # ranked: .9(+) .8(+) .4(-,-) .35(+) .1(-): AP = 1/3*1 + 1/3*1 + 1/3*(3/5)
    assert got["ap"] == pytest.approx((1 + 1 + 0.6) / 3)
    assert got["balanced_accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    assert got["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 0))
    videos = pd.DataFrame({"path": ["a", "a", "b", "b", "c", "c"], "y": [1, 1, 0, 0, 1, 1], "score": s})
    # video scores (top clip): a 0.4 (anomalous), b 0.8 (normal), c 0.9 (anomalous): 1 of 2 pairs won
    assert pm.video_level_auc(videos) == pytest.approx(0.5)


def test_frame_level_auc_matches_hand_computation(tmp_path: Path):
    annotations = tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    annotations.write_text("Fight001_x264.mp4  Fighting  4  7  -1  -1\n"
                           "Normal_Videos_001_x264.mp4  Normal  -1  -1  -1  -1\n")
    clips = pd.DataFrame({  # an unlisted anomalous video is left out; an unlisted normal one has no anomalous frame
        "path": (["x/Fight001_x264.mp4"] * 3 + ["y/Normal_Videos_001_x264.mp4"] * 2
                 + ["z/unannotated.mp4", "w/Normal_Videos_009_x264.mp4"]),
        "n_frames": [12, 12, 12, 6, 6, 6, 4],
        "start_frame": [0, 4, 6, 0, 2, 0, 0],
        "end_frame": [4, 8, 10, 4, 6, 4, 4],
        "score": [0.2, 0.9, 0.5, 0.1, 0.3, 0.99, 0.6],
        "y": [1, 1, 1, 0, 0, 1, 0],
    })
    # Fight001 frames 0-3: 0.2; 4-5: 0.9; 6-7: mean(0.9, 0.5) = 0.7; 8-9: 0.5; 10-11 (no clip covers
    # them: a tail shorter than a clip) take the last covered frame's 0.5 -> anomalous frames 4..7
    # Normal frames 0-1: 0.1; 2-3: mean(0.1, 0.3) = 0.2; 4-5: 0.3 -> all normal
    fight = [0.2] * 4 + [0.9] * 2 + [0.7] * 2 + [0.5] * 4
    normal = [0.1] * 2 + [0.2] * 2 + [0.3] * 2
    np.testing.assert_allclose(pm.frame_scores(clips.iloc[:3], 12), fight)
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
    ("split", "has no test split"),
    ("index_rows", "index.csv has 79 test clips, the manifest 80 rows"),
    ("no_index", "clip index (manifest index.path) is missing: probe=mil_ranking and probe.annotations need it"),
    ("annotations", "probe.annotations: no file"),
    ("annotations_garbage", "line 2 of"),
    ("annotations_empty", "annotates no anomalous frame"),
    ("index_garbage", "cannot read the index"),
    ("index_outside", "has a clip outside its video (row 12: start_frame 999"),
    ("splits_list", "is not an extraction manifest (missing or wrong 'splits')"),
    ("no_such_run", "is neither a folder nor an MLflow run id"),
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
    elif damage == "one_class":
        np.save(folder / "labels_val.npy", np.zeros(80, np.int8))
    elif damage == "split":
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["splits"]["test"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "index_rows":
        pd.read_csv(folder / "index.csv").iloc[:-1].to_csv(folder / "index.csv", index=False)
    elif damage == "no_index":
        (folder / "index.csv").unlink()
    elif damage == "annotations_garbage":
        (tmp_path / "a.txt").write_text("Fight001_x264.mp4  Fighting  4  7  -1  -1\n"
                                        "this is not an annotation file at all\n")
    elif damage == "annotations_empty":
        (tmp_path / "a.txt").write_text("")
    elif damage == "index_garbage":
        (folder / "index.csv").write_bytes(b"")
    elif damage == "index_outside":
        index = pd.read_csv(folder / "index.csv")
        index.loc[10, "start_frame"] = 999
        index.to_csv(folder / "index.csv", index=False)
    elif damage == "splits_list":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["splits"] = []
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "no_such_run":
        folder = "0123456789abcdef0123456789abcdef"
    extra = {"index_rows": ["probe=mil_ranking"], "no_index": ["probe=mil_ranking"],
             "annotations": [f"probe.annotations={tmp_path}/missing.txt"]}.get(damage, [])
    if damage.startswith("annotations_"):
        extra = [f"probe.annotations={tmp_path}/a.txt"]
    proc = train("task=probe", f"embeddings={folder}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/r", *extra,
                 check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = only_line(proc.stderr)
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "r/checkpoints").exists() and not (tmp_path / "mlruns.db").exists()


def test_mil_ranking_scores_the_planted_anomaly_above_the_rest_of_its_video(tmp_path: Path):
    """Video labels only (every clip of an anomalous video says 1); the anomaly is planted in 10-30%
    of its clips. MIL ranking must find it: in the anomalous test videos, the planted clips score
    above the video's other clips.

    80-105 s on 2 cores, why it is this long: the claim is that MIL converges on video labels alone,
    so the probe trains as configured (early stopping on the validation AUC, 50 videos of clips); a
    shorter fit or fewer videos tests a probe that has not learned, and makes the 0.9 thresholds luck."""
    from vidlab.probe.localised import ANNOTATIONS, write_localised

    folder = write_localised(tmp_path / "emb", videos={"train": 30, "val": 10, "test": 10}, dim=32, strength=6.0,
                             scene_shift=0.0, seed=3)
    probe, splits, selected = fit_probe("mil_ranking", folder, tmp_path / "out")
    test = splits["test"]
    table = test.clips.assign(score=probe.scores(test), y=test.y)
    annotations = pm.read_temporal_annotations(folder / ANNOTATIONS)
    top_is_planted, margins = [], []
    for path, clips in table[table.y == 1].groupby("path"):
        planted = pm.frame_labels(Path(path).name, int(clips.n_frames.iloc[0]),
                                  annotations)[clips.start_frame.to_numpy()]
        top_is_planted.append(planted[np.argmax(clips.score.to_numpy())])
        margins.append(clips.score[planted].mean() - clips.score[~planted].mean())
    frame_auc, videos = pm.frame_level_auc(table, annotations)
    assert (selected["probe/best_epoch"] >= 0 and np.mean(top_is_planted) >= 0.9
            and np.mean(margins) > 0.2), (top_is_planted, margins)
    assert frame_auc > 0.9 and videos == 20
