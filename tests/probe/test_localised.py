"""The localised-anomaly generator: real extraction folders, read back as the probe reads them."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vidlab.embeddings.clip_index import COLUMNS
from vidlab.embeddings.manifest import VERSION
from vidlab.probe.data import check_manifest, load_splits
from vidlab.probe.localised import ANNOTATIONS, write_localised
from vidlab.probe.metrics import read_temporal_annotations
from vidlab.splits import SPLITS

from conftest import ROOT

SMALL = {"train": 6, "val": 2, "test": 4}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_localised(tmp_path_factory.mktemp("synthetic") / "emb")  # the defaults the benchmark uses


@pytest.fixture(scope="module")
def index(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "index_clips.csv")


def test_folder_is_an_extraction_the_probe_reads(folder: Path, index: pd.DataFrame):
    manifest = check_manifest(folder)
    assert manifest.backbone == "synthetic/localised" and manifest.weights is None and manifest.mlflow_run_id is None
    assert manifest.embedding_dim == 128 and manifest.frames_per_clip == 16
    # written, not only upgraded on read
    assert json.loads((folder / "manifest.json").read_text())["format_version"] == VERSION
    assert manifest.generator["videos"] == {"train": 60, "val": 20, "test": 30} and manifest.generator["seed"] == 0
    assert list(index.columns) == COLUMNS and manifest.index.rows == len(index)
    assert manifest.index.path == str((folder / "index_clips.csv").resolve())
    assert manifest.index.sha256 == hashlib.sha256((folder / "index_clips.csv").read_bytes()).hexdigest()
    assert list(index.split.unique()) == list(SPLITS)
    splits = load_splits(folder, manifest)  # labels 0/1 with both classes, finite rows, index rows = manifest rows
    for split in SPLITS:
        part = index[index.split == split]
        assert len(splits[split].y) == manifest.splits[split].rows == len(part) and splits[split].invalid == 0
        assert (splits[split].clips.path.to_numpy() == part.path.to_numpy()).all()
        assert np.load(folder / f"embeddings_{split}.npy").dtype == np.float16
        assert manifest.splits[split].label_counts == {
            str(k): int(v) for k, v in part.y.value_counts().sort_index().items()}
    assert not list(folder.glob(".*")), "a temporary file was left behind"


def test_labels_are_inherited_per_video(folder: Path, index: pd.DataFrame):
    for split in SPLITS:
        part = index[index.split == split].reset_index(drop=True)
        np.testing.assert_array_equal(np.load(folder / f"labels_{split}.npy"), part.y.to_numpy(np.int8))
        videos = part.groupby("path", sort=False)
        assert (videos.y.nunique() == 1).all() and (videos.category.nunique() == 1).all()
        first = videos.first()
        assert (first.y == first.index.str.startswith("Anomaly-Videos/")).all()
        assert ((first.category == "Normal") == (first.y == 0)).all()
        assert set(first.category) == {"Normal", "Fighting", "Explosion", "Robbery"}
        per_class = {"train": 60, "val": 20, "test": 30}[split]
        assert first.y.value_counts().to_dict() == {0: per_class, 1: per_class}
        for _, clips in videos:
            n = len(clips)
            assert 20 <= n <= 60 and (clips.clip_idx == np.arange(n)).all()
            assert ((clips.start_frame == 16 * clips.clip_idx).all()
                    and (clips.end_frame == clips.start_frame + 16).all())
            assert (0 <= clips.n_frames.iloc[0] - 16 * n < 16
                    and (clips.n_frames.nunique(), clips.fps.iloc[0]) == (1, 30.0))
    assert index.groupby("path").split.nunique().max() == 1, "a video name is in two splits"


def test_annotations_mark_a_minority_of_anomalous_clips(folder: Path, index: pd.DataFrame, tmp_path: Path):
    annotations = read_temporal_annotations(folder / ANNOTATIONS)
    test = index[index.split == "test"].reset_index(drop=True)
    lines = (folder / ANNOTATIONS).read_text().splitlines()
    assert len(lines) == test.path.nunique() == len(annotations) and all(len(line.split("  ")) == 6 for line in lines)
    counts = set()
    for path, clips in test.groupby("path"):
        ranges, n = annotations[Path(path).name], len(clips)
        if clips.y.iloc[0] == 0:
            assert ranges == []
            continue
        counts.add(len(ranges))
        assert all(s % 16 == 0 and (e + 1) % 16 == 0 and 0 <= s <= e < 16 * n for s, e in ranges)
        frames = sum(e - s + 1 for s, e in ranges)
        assert 0.1 <= frames / (16 * n) <= 0.3 and frames / clips.n_frames.iloc[0] <= 0.3
    assert counts == {1, 2}
    # The same seed with a huge anomaly and no scene places the same ranges, now visible in the embeddings
    strong = write_localised(tmp_path / "strong", strength=100.0, scene_std=0.0, scene_shift=0.0)
    assert (strong / ANNOTATIONS).read_bytes() == (folder / ANNOTATIONS).read_bytes()
    norms = np.linalg.norm(np.load(strong / "embeddings_test.npy").astype(np.float32), axis=1)
    annotated = np.zeros(len(test), bool)
    for i, clip in test.iterrows():
        annotated[i] = any(s <= clip.start_frame and clip.end_frame - 1 <= e
                           for s, e in annotations[Path(clip.path).name])
    np.testing.assert_array_equal(norms > 50, annotated)


def test_same_seed_same_bytes(tmp_path: Path):
    (tmp_path / "a").mkdir()  # an existing empty folder is accepted
    a, b, c = (write_localised(tmp_path / name, videos=SMALL, dim=16, seed=seed)
               for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    for name in ("embeddings_test.npy", "index_clips.csv", ANNOTATIONS):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "embeddings_test.npy").read_bytes() != (c / "embeddings_test.npy").read_bytes()


def test_non_empty_folder_is_refused(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an empty folder") as err:
        write_localised(tmp_path, videos=SMALL, dim=16)
    assert "\n" not in str(err.value) and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_command_line(tmp_path: Path):
    cmd = [sys.executable, "-m", "vidlab.probe.localised", str(tmp_path / "out"), "--videos-per-class", "6",
           "--dim", "16", "--seed", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["generator"]["videos"] == {"train": 6, "val": 2, "test": 3} and manifest["embedding_dim"] == 16
    rows = manifest["splits"]
    counts = ", ".join(f"{split} {rows[split]['rows']} clips" for split in SPLITS)
    assert proc.stdout == f"wrote {tmp_path / 'out'}: {counts}\n"
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
            and "is not an empty folder" in again.stderr)
