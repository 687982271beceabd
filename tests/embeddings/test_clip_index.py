"""The clip index: real video trees (OpenCV mp4v and PyAV H.264 with B-frames), extract.py run in this
process through its own ``main``; its exit codes 1 and 2 on real processes (``test_clear_errors``)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from vidlab.embeddings.clip_index import COLUMNS, clip_starts
from vidlab.embeddings.index_check import check_index, resolve_paths
from vidlab.embeddings.layouts import Video, stratified_split
from vidlab.video.count import FrameCountCache, count_many, video_info

from conftest import UCF_VIDEOS, extract, make_ucf_tree, only_line, run_extract, write_h264, write_mp4v


def _index(root: Path, work: Path, *extra: str, check: bool = True):
    proc = extract(
        "stage=index", "layout=ucf_crime", f"layout.root={root}", f"paths.root={work}",
        f"hydra.run.dir={work}/out", "indexing.clip_len=16", "indexing.stride=8", "indexing.workers=2", *extra,
        check=check,
    )
    return proc, work / "data/index/ucf_crime/index_clips.csv"


def test_clip_arithmetic():
    assert clip_starts(40, 16, 8, "drop") == [0, 8, 16, 24]
    assert clip_starts(39, 16, 8, "drop") == [0, 8, 16]
    assert clip_starts(10, 16, 8, "drop") == [] and clip_starts(10, 16, 8, "pad") == [0]


@pytest.mark.parametrize("writer", [write_h264, write_mp4v])
def test_exact_frame_counts(tmp_path: Path, writer):
    path = writer(tmp_path / "v.mp4", 77)
    assert video_info(path).n_frames == video_info(path, "decode").n_frames == 77
    assert video_info(path).fps == pytest.approx(30.0)


def test_ucf_crime_index(ucf_tree: Path, tmp_path: Path):
    proc, csv = _index(ucf_tree, tmp_path / "work")
    assert "valid: no violation" in proc.stdout
    table = pd.read_csv(csv)
    assert list(table.columns) == COLUMNS
    assert (table.end_frame == table.start_frame + 16).all() and (table.stride == 8).all()
    for rel, (n, _) in UCF_VIDEOS.items():
        rows = table[table.path == rel]
        expected = clip_starts(n, 16, 8, "drop")
        assert rows.start_frame.tolist() == expected, rel
        assert rows.clip_idx.tolist() == list(range(len(expected)))
        assert (rows.n_frames == n).all() and (rows.fps == 30.0).all()
    split_of = table.groupby("path").split.agg(set)
    assert all(len(s) == 1 for s in split_of)
    assert split_of["Anomaly-Videos-Part-1/Abuse/Abuse002_x264.mp4"] == {"test"}
    assert split_of["Anomaly-Videos-Part-2/Robbery/Robbéry 002 x264.mp4"] == {"test"}
    assert split_of["Testing_Normal_Videos/Normal_Videos_003_x264.mp4"] == {"test"}
    assert {s.pop() for s in split_of} == {"train", "val", "test"}
    normal = table[table.category == "Normal"]
    assert (normal.y == 0).all() and (table[table.category != "Normal"].y == 1).all()
    report = json.loads(csv.with_suffix(".json").read_text())
    assert report["split_source"] == "official lists"
    assert (report["short_videos"]["count"] == 1
            and report["short_videos"]["paths"][0].endswith("Normal_Videos005_x264.mp4"))
    assert report["root"] == str(ucf_tree.resolve())
    # unlisted anomaly videos are left out and reported, normal folders follow their folder
    assert any(p.endswith("Normal_Videos002_x264.mp4") for p in table.path)

    # deterministic: a second run (frame counts cached) writes the identical file
    first = csv.read_bytes()
    _, csv2 = _index(ucf_tree, tmp_path / "work")
    assert csv2.read_bytes() == first
    assert json.loads(csv.with_suffix(".json").read_text())["frame_count"]["cached_videos"] == len(UCF_VIDEOS)

    client = MlflowClient(f"sqlite:///{tmp_path}/work/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("embeddings").experiment_id])
    assert len(runs) == 2 and runs[0].data.metrics["violations"] == 0
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"check", "index", "config"}


def test_bad_files_fail_listing_every_file_or_are_skipped(ucf_tree: Path, tmp_path: Path):
    bad = ucf_tree / "Anomaly-Videos-Part-1/Abuse/Abuse001_x264.mp4"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    (ucf_tree / "Testing_Normal_Videos/Normal_Videos_009_x264.mp4").write_bytes(b"")  # zero frames
    proc, csv = _index(ucf_tree, tmp_path / "work", check=False)
    assert proc.returncode == 1 and not csv.exists()
    assert "2 bad video(s)" in proc.stderr and "Abuse001_x264.mp4" in proc.stderr and "Normal_Videos_009" in proc.stderr
    _, csv = _index(ucf_tree, tmp_path / "work", "indexing.on_error=skip")
    report = json.loads(csv.with_suffix(".json").read_text())
    assert len(report["bad_videos"]) == 2
    assert not pd.read_csv(csv).path.str.contains("Abuse001").any()


def test_video_tree_layout_and_stratified_split(tmp_path: Path):
    root = tmp_path / "tree"
    for category in ("Normal", "Fight", "Theft"):
        for i in range(5):
            write_mp4v(root / category / "nested" / f"{category}_{i}.avi" if i % 2
                       else root / category / f"{category}_{i}.mp4", 20)
    proc = extract("stage=index", "layout=video_tree", f"layout.root={root}", f"paths.root={tmp_path}",
                       f"hydra.run.dir={tmp_path}/out", "indexing.clip_len=8", "indexing.stride=8", "logger=none",
                       "layout.split_ratios=[0.6,0.2,0.2]")
    table = pd.read_csv(tmp_path / "data/index/video_tree/index_clips.csv")
    assert "valid" in proc.stdout
    videos = table.groupby("path").first()
    assert set(videos.category) == {"Normal", "Fight", "Theft"}
    assert (videos[videos.category == "Normal"].y == 0).all() and (videos[videos.category != "Normal"].y == 1).all()
    counts = videos.groupby(["category", "split"]).size().unstack()
    assert (counts["train"] == 3).all() and (counts["val"] == 1).all() and (counts["test"] == 1).all()


def test_split_is_deterministic_and_by_video():
    videos = [Video(Path(f"c{c}/v{i}.mp4"), f"c{c}", 1) for c in range(3) for i in range(20)]
    a, b = stratified_split(videos, [0.7, 0.15, 0.15], 1), stratified_split(videos, [0.7, 0.15, 0.15], 1)
    assert a == b and stratified_split(videos, [0.7, 0.15, 0.15], 2) != a
    assert len({v.path for v in a}) == 60


@pytest.fixture(scope="module")
def valid_index(tmp_path_factory) -> tuple[Path, Path]:
    """One UCF-like tree and its index, shared by the validation tests (which only read them)."""
    base = tmp_path_factory.mktemp("valid_index")
    root = make_ucf_tree(base / "UCF Crime")
    _, csv = _index(root, base / "work", "logger=none")
    return root, csv


VIOLATIONS = {
    "past_end": lambda t: t.assign(n_frames=np.where(t.index == 0, 10, t.n_frames)),
    "invalid_range": lambda t: t.assign(start_frame=np.where(t.index == 1, 40, t.start_frame)),
    "duplicates": lambda t: pd.concat([t, t.iloc[[2]]], ignore_index=True),
    "split_leak": lambda t: t.assign(split=np.where(t.index == 0, "test" if t.split[0] != "test" else "train",
                                                    t.split)),
    "missing_files": lambda t: t.assign(path=np.where(t.index == 3, "nowhere/gone.mp4", t.path)),
    "clip_idx": lambda t: t.assign(clip_idx=np.where(t.index == 1, 7, t.clip_idx)),
    "labels": lambda t: t.assign(y=np.where(t.index == 0, 2, t.y)),
    "types": lambda t: t.assign(start_frame=t.start_frame.astype(object).where(t.index != 0, "x")),
    "columns": lambda t: t[list(reversed(COLUMNS))],
}


@pytest.mark.parametrize("check", sorted(VIOLATIONS))
def test_validation_catches_each_violation(valid_index, tmp_path: Path, check: str):
    _, csv = valid_index
    table = pd.read_csv(csv)
    assert check_index(csv)["violations"] == []
    broken = tmp_path / "index_clips.csv"
    shutil.copy(csv.with_suffix(".json"), broken.with_suffix(".json"))  # the recorded root
    VIOLATIONS[check](table).to_csv(broken, index=False)
    found = {v["check"] for v in check_index(broken)["violations"]}
    assert check in found, found


def test_validate_stage_exit_code_and_path_root_remap(valid_index, tmp_path: Path):
    ucf_tree, csv = valid_index
    table = pd.read_csv(csv)
    elsewhere = table.assign(path="/home/someone/tesis/UCF_Crime/" + table.path)
    foreign = tmp_path / "foreign.csv"
    elsewhere.to_csv(foreign, index=False)
    common = ["stage=validate", f"index={foreign}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/v"]
    proc = extract(*common, check=False)
    assert proc.returncode == 1 and "missing_files" in proc.stdout
    proc = extract(*common, f"path_root={ucf_tree}")
    assert "valid: no violation" in proc.stdout and "train" in proc.stdout
    remapped = resolve_paths(elsewhere.path, foreign, str(ucf_tree))
    assert all(Path(p).is_file() for p in remapped)
    report = json.loads((tmp_path / "v/index_check.json").read_text())
    assert report["violations"] == [] and len(report["sha256"]) == 64


def test_the_notebooks_index_is_read_as_written_and_a_strict_root_is_opt_in(valid_index, tmp_path: Path, monkeypatch):
    """The seed notebook's ``processed/index_clips.csv``: its columns, absolute paths, no sidecar JSON,
    in a folder of its own (the videos elsewhere), named relative to the working directory."""
    ucf_tree, csv = valid_index
    table = pd.read_csv(csv)
    processed = tmp_path / "processed"
    processed.mkdir()
    table.assign(path=[str(ucf_tree / p) for p in table.path]).to_csv(processed / "index_clips.csv", index=False)
    monkeypatch.chdir(tmp_path)
    common = ["stage=validate", "index=processed/index_clips.csv", f"paths.root={tmp_path}",
              f"hydra.run.dir={tmp_path}/v", "logger=none"]
    assert "valid: no violation" in extract(*common).stdout
    proc = extract(*common, "check.strict_root=true", check=False)  # for an index from elsewhere
    assert proc.returncode == 1
    assert (f"[outside_root] {len(table)} row(s): path leaves the video root {processed} (check.strict_root=true)"
            in proc.stdout)
    # the root named
    assert "valid: no violation" in extract(*common, "check.strict_root=true", f"path_root={ucf_tree}").stdout
    moved = tmp_path / "moved.csv"  # made on the notebook's machine, remapped here with path_root
    table.assign(path="/home/DIINF/dvaldes/tesis/UCF_Crime/" + table.path).to_csv(moved, index=False)
    assert "valid: no violation" in extract(*common, f"index={moved}", f"path_root={ucf_tree}",
                                            "check.strict_root=true").stdout


def test_an_index_without_clips_is_not_valid(tmp_path: Path):
    """A header and no clip (or not even a header): stage=validate reports it, then ends as bad input
    does (one line, exit 1, its run FAILED with that line); stage=extract says one line before any
    output folder or MLflow run."""
    index = tmp_path / "index_clips.csv"
    pd.DataFrame(columns=COLUMNS).to_csv(index, index=False)
    common = [f"index={index}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run"]
    proc = extract("stage=validate", *common, check=False)
    assert (proc.returncode == 1 and "[empty] 0 row(s): the index has no clip" in proc.stdout
            and "valid: no violation" not in proc.stdout)
    line = proc.stderr.strip().splitlines()[-1]  # after the fresh store's own log lines
    assert line == (f"error: index: {index} is not valid [empty]: the index has no clip "
                    f"(every violation: {tmp_path}/run/index_check.txt)")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("embeddings").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["vidlab.error"] == line.removeprefix("error: ")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "check")} == {
        "check/index_check.json", "check/index_check.txt"}
    extraction = [*common, "backbone=r3d_18", "backbone.weights=null", f"extraction.output={tmp_path / 'emb'}"]
    proc = extract(*extraction, check=False)
    assert proc.returncode == 1 and only_line(proc.stderr) == f"error: index: {index} has no clip"
    index.write_bytes(b"")
    for stage in ("validate", "extract"):
        proc = extract(f"stage={stage}", *extraction, check=False)
        assert proc.returncode == 1 and only_line(proc.stderr).startswith(
            f"error: index: {index} is not a readable CSV (No columns")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    assert [run.data.tags["stage"] for run in client.search_runs(
        [client.get_experiment_by_name("embeddings").experiment_id])] == ["validate"] * 2
    assert not (tmp_path / "emb").exists()


def test_clear_errors(tmp_path: Path):
    """extract.py's exit codes as a shell sees them: 2 for a config error, 1 for a missing index;
    a layout root that is not a folder is refused before the MLflow run exists."""
    proc = run_extract("stage=index", "layout=ucf_crime", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/o",
                       check=False)
    assert proc.returncode == 2 and "layout.root" in proc.stderr
    proc = extract("stage=index", "layout=ucf_crime", f"layout.root={tmp_path}/nowhere", f"paths.root={tmp_path}",
                   f"hydra.run.dir={tmp_path}/o", check=False)  # in this process: the exit code is the one above
    assert proc.returncode == 2 and only_line(proc.stderr) == (
        f"config error: layout.root: not a folder: {tmp_path}/nowhere")
    assert not (tmp_path / "mlruns.db").exists()
    proc = run_extract("stage=validate", f"index={tmp_path}/none.csv", "logger=none", f"hydra.run.dir={tmp_path}/o",
                       check=False)
    assert proc.returncode == 1 and "index: file not found" in proc.stderr
    proc = run_extract("stage=index", "indexing.stride=0", "layout.root=/x", "logger=none",
                       f"hydra.run.dir={tmp_path}/o", check=False)
    assert proc.returncode == 2 and "indexing.stride" in proc.stderr


def test_count_cache_keys_on_size_and_mtime(tmp_path: Path):
    path = str(write_mp4v(tmp_path / "a.mp4", 12))
    cache = FrameCountCache(tmp_path / "cache.json")
    assert count_many([path], cache=cache, progress=False)[path].n_frames == 12
    assert FrameCountCache(tmp_path / "cache.json").get(path, "packets").n_frames == 12
    shutil.copy(write_mp4v(tmp_path / "b.mp4", 20), path)
    assert FrameCountCache(tmp_path / "cache.json").get(path, "packets") is None
    assert count_many([path], cache=FrameCountCache(tmp_path / "cache.json"), progress=False)[path].n_frames == 20
