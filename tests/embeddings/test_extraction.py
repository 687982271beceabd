"""extract.py stage=extract on real generated videos, random-init torchvision weights, CPU: in this
process through its own ``main``, in processes of its own where the process is the point (a kill -9,
two DDP ranks)."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from torchvision.models.video import R3D_18_Weights, r3d_18

from vidlab.embeddings.chunks import sample_indices
from vidlab.embeddings.clip_index import clip_starts
from vidlab.video import VideoEndedError, read_frames

from conftest import (
    EXTRACT,
    EXTRACTED,
    ROOT,
    copy_of,
    extract,
    make_index,
    only_line,
    run_extract,
    write_h264,
    write_mp4v,
)


@pytest.mark.parametrize("writer", [write_h264, write_mp4v])
def test_read_frames_is_frame_exact(tmp_path: Path, writer):
    path = writer(tmp_path / "counting.mp4", 60)
    wanted = [37, 0, 59, 12, 12, 1]
    frames = read_frames(path, wanted)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    green = frames[..., 1].reshape(6, -1).mean(1)  # frame i is grey 4*i; green survives YUV best
    assert np.abs(green - 4 * np.array(wanted)).max() < 1.5
    with pytest.raises(VideoEndedError, match="counting.mp4"):
        read_frames(path, [3, 60])


FAST = EXTRACT  # the session's extraction settings (conftest)


def _extract(index: Path, work: Path, *extra: str, check: bool = True):
    return extract(f"index={index}", f"paths.root={work}", f"hydra.run.dir={work}/run", *extra, check=check)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npy"))}


@pytest.fixture
def extracted(small_index: Path, extraction: Path) -> tuple[Path, Path, Path]:
    """The session's extraction: (its root, the index, its output folder)."""
    return extraction, small_index, extraction / EXTRACTED


def test_outputs_manifest_and_mlflow(extracted):
    base, index, out = extracted
    table = pd.read_csv(index)
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "val", "test"):
        emb = np.load(out / f"embeddings_{split}.npy", mmap_mode="r")
        rows = table[table.split == split]
        assert emb.shape == (len(rows), 512) and emb.dtype == np.float16
        np.testing.assert_array_equal(np.load(out / f"labels_{split}.npy"), rows.y.to_numpy(np.int8))
        assert np.load(out / f"valid_{split}.npy").all()
        assert np.isfinite(emb).all() and (np.abs(emb).sum(1) > 0).all()
        stats = manifest["splits"][split]["statistics"]
        assert all(np.isfinite(stats[k]) for k in ("min", "max", "mean", "std")) and stats["std"] > 0
        assert manifest["splits"][split]["files"]["embeddings"] == f"embeddings_{split}.npy"
    assert manifest["embedding_dim"] == 512 and manifest["frames_per_clip"] == 4 and manifest["failed_rows"] == []
    assert manifest["index"]["rows"] == len(table) and len(manifest["index"]["sha256"]) == 64
    assert manifest["preprocessing"]["kind"] == "notebook"
    client = MlflowClient(f"sqlite:///{base}/mlruns.db")
    run = client.search_runs([client.get_experiment_by_name("embeddings").experiment_id])[0]
    assert run.data.metrics["rows_written"] == len(table) and run.data.metrics["clips_per_second"] > 0
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "embeddings")}
    assert {"embeddings/manifest.json", "embeddings/embeddings_train.npy", "embeddings/valid_test.npy"} <= logged


def test_clips_are_the_sampled_frames(extracted):
    """Rows written = exact frames through torchvision's own model (same seed), within float16 tolerance."""
    _, index, out = extracted
    table = pd.read_csv(index)
    torch.manual_seed(0)
    model = r3d_18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    import cv2

    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    for row in (0, 5, len(table) - 1):
        r = table.iloc[row]
        frames = read_frames(r.path, sample_indices(r.start_frame, r.end_frame, 4))
        x = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_LINEAR) for f in frames]).astype(np.float32) / 255
        x = torch.from_numpy(((x - mean) / std).transpose(3, 0, 1, 2))[None]
        with torch.inference_mode():
            expected = model(x)[0].numpy()
        pos = int((table.split[:row] == r.split).sum())
        got = np.load(out / f"embeddings_{r.split}.npy")[pos].astype(np.float32)
        np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-3)


def test_weights_transforms_and_state_dict_file(tmp_path: Path):
    index = make_index(tmp_path, {"one.mp4": (16, "h264", "train", 1)})
    torch.manual_seed(7)
    model = r3d_18(weights=None)
    torch.save(model.state_dict(), tmp_path / "r3d.pt")
    args = ["backbone=r3d_18", f"backbone.weights={tmp_path / 'r3d.pt'}", "backbone.frames_per_clip=4", "logger=none"]
    extract(f"index={index}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", *args)
    got = np.load(tmp_path / "outputs/embeddings/r3d_18_T4/embeddings_train.npy").astype(np.float32)
    model.fc = torch.nn.Identity()
    model.eval()
    transforms = R3D_18_Weights.DEFAULT.transforms()
    for pos, start in enumerate(clip_starts(16, 8, 8, "drop")):
        clip = torch.from_numpy(read_frames(index.parent / "videos/one.mp4",
                                            sample_indices(start, start + 8, 4))).permute(0, 3, 1, 2)
        with torch.inference_mode():
            expected = model(transforms(clip)[None])[0].numpy()
        np.testing.assert_allclose(got[pos], expected, rtol=2e-2, atol=2e-3)


def test_resize_on_the_device_gives_the_workers_bytes(tmp_path: Path):
    """The default moves torchvision's resize from the loader's readers to the model's device: on the
    CPU, on frames this small, the embedding files are byte for byte those of resizing in the readers
    (on larger frames torch's uint8 resize moves some pixels by one level with its thread count: one
    in a reader, the process's own on the device; docs/embeddings.md); OpenCV's resize
    (preprocess=notebook) cannot move and is refused in one line before any work."""
    index = make_index(tmp_path, {"one.mp4": (24, "h264", "train", 1), "two.mp4": (16, "mp4v", "test", 0)})
    args = ["backbone=r3d_18", "backbone.weights=null", "backbone.frames_per_clip=4", "logger=none"]
    outputs = {}
    for resize_on in ("auto", "workers"):
        _extract(index, tmp_path / resize_on, *args, f"extraction.resize_on={resize_on}")
        out = tmp_path / resize_on / "outputs/embeddings/r3d_18_T4"
        assert json.loads((out / "manifest.json").read_text())["preprocessing"]["resize_on"] == (
            "device" if resize_on == "auto" else "workers")
        outputs[resize_on] = {name: data for name, data in _files(out).items() if name.endswith(".npy")}
    assert outputs["auto"] == outputs["workers"] and len(outputs["auto"]) >= 6
    proc = _extract(index, tmp_path / "refused", *args, "extraction.preprocess=notebook", "extraction.resize_on=device",
                    check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        "config error: extraction.resize_on=device: preprocess=notebook resizes with OpenCV"), proc.stderr[-2000:]
    assert not (tmp_path / "refused/outputs").exists()


def test_resume_after_kill_gives_identical_files(extracted, tmp_path: Path):
    """45-70 s on 2 cores, why: a reference extraction, then a real process (its ~12 s of imports)
    killed with -9 mid-run, then the resumed run: three extractions of the index are the claim."""
    _, index, _ = extracted
    slow = ([a for a in FAST if "preprocess" not in a and "batch_size" not in a]
            + ["extraction.batch_size=2", "logger=none"])
    _extract(index, tmp_path / "reference", *slow)
    reference = tmp_path / "reference/outputs/embeddings/r3d_18_T4"
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "extract.py"), f"index={index}", f"paths.root={work}",
           f"hydra.run.dir={work}/run", *slow]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = work / "outputs/embeddings/r3d_18_T4"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "done_train.npy").exists() and np.load(out / "done_train.npy").sum() >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    total = len(pd.read_csv(index))
    written = sum(int(np.load(p).sum()) for p in out.glob("done_*.npy"))
    assert 0 < written < total, "the kill must land mid-run"
    assert not (out / "manifest.json").exists()
    proc = extract(*cmd[2:])  # the same command line, resumed
    assert f"resuming {out}: {total - written} of {total} clips" in proc.stdout
    assert _files(out).keys() == _files(reference).keys()
    for name, data in _files(reference).items():
        assert _files(out)[name] == data, name


def test_a_folder_is_vidlabs_by_its_progress_record_not_by_file_names(extracted, tmp_path: Path):
    """A folder holding the user's own ``manifest.json``, ``labels_train.npy`` and ``progress.json``
    is refused in one line before any MLflow run, overwrite or not, and left byte for byte; in
    vidlab's own folder, ``overwrite=true`` starts over and a file of the user's stays."""
    _, index, reference = extracted
    theirs = tmp_path / "my embeddings"
    theirs.mkdir()
    np.save(theirs / "labels_train.npy", np.array([1, 0, 1], np.int8))
    (theirs / "manifest.json").write_text('{"model": "mine"}')
    (theirs / "progress.json").write_text('{"epoch": 3}')
    before = {p.name: p.read_bytes() for p in theirs.iterdir()}
    for overwrite in ("false", "true"):
        proc = _extract(index, tmp_path, *FAST, f"extraction.output={theirs}", f"extraction.overwrite={overwrite}",
                        check=False)
        assert proc.returncode == 2 and only_line(proc.stderr) == (
            f"config error: extraction.output: {theirs} holds files an extraction did not write "
            "(labels_train.npy, manifest.json, progress.json); choose a new or empty folder")
        assert {p.name: p.read_bytes() for p in theirs.iterdir()} == before
    assert not (tmp_path / "mlruns.db").exists()

    from vidlab.embeddings.extraction import load_index
    from vidlab.embeddings.store import EmbeddingStore
    from vidlab.errors import ConfigError

    # a start stopped before its claim (a full disk, a signal) is vidlab's to continue
    cut_short = tmp_path / "cut short"
    cut_short.mkdir()
    (cut_short / ".lock").write_text("pid 4242 on elsewhere\n")
    (cut_short / ".progress.4242.part.json").write_text('{"written_by"')
    store = EmbeddingStore(cut_short, load_index(index, None))
    assert store.check_claim({"index_sha256": "any"}, overwrite=False) is False  # nothing claimed, nothing foreign
    (cut_short / ".lock").write_text("the user's own .lock")
    with pytest.raises(ConfigError, match=r"holds files an extraction did not write \(\.lock\)"):
        store.check_claim({"index_sha256": "any"}, overwrite=True)

    ours = copy_of(reference, tmp_path / "ours")
    (ours / "notes.txt").write_text("the session's extraction")
    embeddings = np.load(ours / "embeddings_train.npy", mmap_mode="r+")
    embeddings[0] = 0  # changed: starting over must compute it again
    embeddings.flush()
    del embeddings
    proc = _extract(index, tmp_path, *FAST, "logger=none", "extraction.num_workers=0", f"extraction.output={ours}",
                    "extraction.overwrite=true")
    assert f"starting {ours}: {len(pd.read_csv(index))} of" in proc.stdout
    assert _files(ours) == _files(reference) and (ours / "notes.txt").read_text() == "the session's extraction"


def test_the_notebooks_index_is_extracted_as_written(extracted, tmp_path: Path, monkeypatch):
    """The seed notebook's ``processed/index_clips.csv``: absolute paths into another folder, no
    sidecar JSON, named relative to the working directory; the session's embeddings, byte for byte."""
    _, index, reference = extracted
    (tmp_path / "processed").mkdir()
    shutil.copy(index, tmp_path / "processed/index_clips.csv")
    monkeypatch.chdir(tmp_path)
    _extract(Path("processed/index_clips.csv"), tmp_path, *FAST, "logger=none", "extraction.num_workers=0")
    assert _files(tmp_path / EXTRACTED) == _files(reference)


def test_a_full_disk_is_one_line_and_the_same_command_resumes(extracted, tmp_path: Path):
    """Real processes on a 1 MiB tmpfs left 64 KiB free (a mount namespace of their own, ``unshare``):
    room for the memory-mapped files made sparse, not for their rows. Before, the first rows written
    killed the process with SIGBUS (exit 135, no message, its run left RUNNING); now the files get
    their space when made: one line, exit 1, the run FAILED, and once space is freed the same command
    resumes to the session's files. 40-55 s on 2 cores, why: two real processes (~12 s of imports
    each), as the mount namespace holds the tmpfs only for the processes started in it."""
    _, index, reference = extracted
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    disk, out = tmp_path / "disk", tmp_path / "disk/emb"
    disk.mkdir()
    command = shlex.join([sys.executable, str(ROOT / "extract.py"), f"index={index}", f"paths.root={tmp_path}",
                          f"hydra.run.dir={tmp_path}/run", *FAST, "extraction.num_workers=0",
                          f"extraction.output={out}"])
    fill = ("import os, sys; free = os.statvfs(sys.argv[1]); "
            "f = os.open(sys.argv[1] + '/filler', os.O_CREAT | os.O_WRONLY); "
            "os.posix_fallocate(f, 0, free.f_bavail * free.f_frsize - 65536)")
    q = shlex.quote
    script = "\n".join([
        f"mount -t tmpfs -o size=1m tmpfs {q(str(disk))} || exit 77",
        f"{q(sys.executable)} -c {q(fill)} {q(str(disk))} || exit 1",
        f"{command} >{q(str(tmp_path / 'full.out'))} 2>{q(str(tmp_path / 'full.err'))}; "
        f"echo $? >{q(str(tmp_path / 'full.rc'))}",
        f"rm {q(str(disk / 'filler'))}",
        f"{command} >{q(str(tmp_path / 'freed.out'))} 2>{q(str(tmp_path / 'freed.err'))}; "
        f"echo $? >{q(str(tmp_path / 'freed.rc'))}",
        f"cp -a {q(str(out))} {q(str(tmp_path / 'after'))}",
    ])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if not (tmp_path / "full.rc").exists():
        pytest.skip(f"no tmpfs could be mounted here (unshare exit {proc.returncode}: {proc.stderr.strip()[-300:]})")
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1", full_err[-3000:]
    assert (full_err.strip().splitlines()[-1].startswith(f"error: no space left on {out}")
            and "Traceback" not in full_err)
    assert (tmp_path / "freed.rc").read_text().strip() == "0", (tmp_path / "freed.err").read_text()[-3000:]
    assert f"resuming {out}: {len(pd.read_csv(index))} of" in (tmp_path / "freed.out").read_text()
    assert _files(tmp_path / "after") == _files(reference)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    full, freed = sorted(client.search_runs([client.get_experiment_by_name("embeddings").experiment_id]),
                         key=lambda r: r.info.start_time)
    assert full.info.status == "FAILED" and full.data.tags["vidlab.error"].startswith(f"no space left on {out}")
    assert freed.info.status == "FINISHED"


def test_skip_policy_and_fail_policy(tmp_path: Path):
    index = make_index(tmp_path, {"good.mp4": (24, "h264", "train", 0), "bad one.mp4": (24, "mp4v", "train", 1)})
    bad = tmp_path / "videos/bad one.mp4"
    bad.write_bytes(bad.read_bytes()[:200])
    proc = _extract(index, tmp_path / "w1", *FAST, "logger=none", check=False)
    assert proc.returncode == 1 and "bad one.mp4" in proc.stderr and "rows [3, 4, 5]" in proc.stderr
    _extract(index, tmp_path / "w2", *FAST, "logger=none", "extraction.on_error=skip")
    out = tmp_path / "w2/outputs/embeddings/r3d_18_T4"
    np.testing.assert_array_equal(np.load(out / "valid_train.npy"), [True] * 3 + [False] * 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["row"] for f in manifest["failed_rows"]] == [3, 4, 5]
    assert "bad one.mp4" in manifest["failed_rows"][0]["reason"]
    assert manifest["splits"]["train"]["statistics"]["rows_valid"] == 3


def test_clear_errors(tmp_path: Path):
    proc = _extract(tmp_path / "missing.csv", tmp_path, *FAST, "logger=none", check=False)
    assert proc.returncode == 1 and "index: file not found" in proc.stderr
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"path": ["a.mp4"], "start": [0]}).to_csv(wrong, index=False)
    proc = _extract(wrong, tmp_path, *FAST, "logger=none", check=False)
    assert proc.returncode == 1 and "expected ['split', 'y'" in proc.stderr
    proc = _extract(wrong, tmp_path, "logger=none", "backbone=mvit_v2_s", "backbone.frames_per_clip=8", check=False)
    assert proc.returncode == 2 and "backbone.frames_per_clip: mvit_v2_s takes 15 to 16 frames" in proc.stderr


def test_two_ddp_processes_write_the_same_files(extracted, tmp_path: Path):
    """Lightning's DDP starts the second rank as a process running the same command line: a process."""
    _, index, reference = extracted
    run_extract(f"index={index}", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run", *FAST, "logger=none",
                "extraction.accelerator=cpu", "extraction.devices=2", "extraction.strategy=ddp")
    out = tmp_path / "outputs/embeddings/r3d_18_T4"
    assert (out / "manifest.json").exists()
    for name, data in _files(reference).items():
        assert _files(out)[name] == data, name


@pytest.mark.parametrize("name,frames,size,dim", [("r3d_18", 1, 64, 512), ("mc3_18", 4, 64, 512),
                                                  ("r2plus1d_18", 4, 64, 512), ("swin3d_t", 2, 64, 768)])
def test_backbones_give_their_dim_with_head_removed(name, frames, size, dim):
    from vidlab.embeddings.backbones import load_backbone

    model = load_backbone(name, None)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.inference_mode():
        assert model(torch.rand(2, 3, frames, size, size)).shape == (2, dim)


def test_frame_limits_are_checked_before_work():
    from vidlab.embeddings.backbones import check_frames

    check_frames("mvit_v2_s", 16)
    check_frames("s3d", 13)
    for name, frames in (("mvit_v1_b", 8), ("mvit_v2_s", 17), ("s3d", 12)):
        with pytest.raises(ValueError, match=f"frames_per_clip: {name}"):
            check_frames(name, frames)
