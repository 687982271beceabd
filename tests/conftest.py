"""Shared fixtures: real video files written with OpenCV, composed real configs, and the expensive things
many tests only read, built once per session: generated digits, a tiny trained run, a tiny sweep, a small
clip index and its extraction. A test that changes one of them works on its own copy.

``train.py`` and ``extract.py`` run in this process (:func:`run_main`: their own ``main``, through Hydra)
unless the process is the point (exit codes and signals as a shell sees them, launchers): a process pays
~12 s of imports before it does anything."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vidlab.embeddings.clip_index import COLUMNS, clip_starts

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    """How an entry point's ``main`` ended: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def benchmarks_importable() -> Iterator[None]:
    """``benchmarks/`` on ``sys.path`` while the block runs, as running a script there puts it (the
    processes a benchmark starts import it too)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def call_main(main: Callable[[], object]) -> Outcome:
    """A command's ``main`` called in this process: its exit code (``SystemExit``'s, as the process
    would end) and what it printed to stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return Outcome(code, out.getvalue(), err.getvalue())


def run_main(script: str, *args: str, check: bool = True) -> Outcome:
    """``python <script> <args>`` in this process: the script run as ``__main__`` (``runpy``), so its
    ``hydra.main`` composes, makes the run folder, sets up job logging, callbacks and the launcher, then
    runs the task through ``vidlab.jobs.run_job``, with ``args`` as its command line; its exit code and
    what it printed to stdout and stderr. The root logger's handlers Hydra configured for the job (its
    ``train.log``) are closed afterwards, and what a job sets for the rest of its process (signal
    handlers, environment variables such as Lightning's seed, Hydra's config) is put back."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    environ = dict(os.environ)
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    argv, sys.argv = sys.argv, [str(ROOT / script), *args]
    GlobalHydra.instance().clear()
    try:
        outcome = call_main(lambda: runpy.run_path(str(ROOT / script), run_name="__main__"))
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        os.environ.clear()
        os.environ.update(environ)
        for signum, handler in signals.items():
            signal.signal(signum, handler)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    if check and outcome.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({outcome.returncode}):\n"
                             f"{outcome.stdout[-3000:]}\n{outcome.stderr[-5000:]}")
    return outcome


def train(*args: str, check: bool = True) -> Outcome:
    """``train.py <args>``, in this process (:func:`run_main`)."""
    return run_main("train.py", *args, check=check)


def extract(*args: str, check: bool = True) -> Outcome:
    """``extract.py <args>``, in this process (:func:`run_main`)."""
    return run_main("extract.py", *args, check=check)


def only_line(text: str) -> str:
    """The one line an error prints (failing if there is more than one)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def resume_checkpoint(line: str, folder: Path) -> Path:
    """The checkpoint a stopped job's last line says to resume from, checked to be in ``folder`` and
    there. Mid-epoch, the one saved as it stopped (``interrupted.ckpt``); between an epoch's training
    and its validation, the epoch's start (``last.ckpt``): where the signal lands is the OS's choice."""
    checkpoint = Path(line.rsplit("ckpt_path=", 1)[1])
    assert checkpoint.parent == folder and checkpoint.name in ("interrupted.ckpt", "last.ckpt"), line
    assert checkpoint.is_file(), line
    # at the epoch's end no interrupted.ckpt is written: resuming from it would skip the validation
    assert (folder / "interrupted.ckpt").exists() == (checkpoint.name == "interrupted.ckpt"), line
    return checkpoint


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test``: two workers) each worker, and every process it starts, gets its
    share of the cores for torch's threads: two workers each running torch on every core oversubscribe
    the machine (a probe's fit took 4x as long on 2 cores). A test's processes all see the same count."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_readme.py first: the longest file (every README command is a process of its own), so that
    with two workers (``make test``) it runs on one while the rest of the suite runs on the other."""
    items.sort(key=lambda item: item.path.name != "test_readme.py")


def run_train(*overrides: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``train.py`` in a subprocess, where the process is the point (exit codes, signals,
    launchers), returning its output."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def free_port() -> int:
    """A free TCP port on the loopback interface, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, server: subprocess.Popen, seconds: float, log: Path | None = None) -> None:
    """Poll ``url`` until the server answers; fail, with its exit code and log tail, if it exits or
    ``seconds`` pass first."""
    import time
    import urllib.request

    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3):
                return
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
                raise AssertionError(f"no answer from {url} (exit {server.poll()}):\n{tail}") from None
            time.sleep(0.5)


def tiny_overrides(root: Path, digits: Path) -> list[str]:
    """A complete run shrunk to seconds, with its store and outputs under ``root``, reading the
    session's generated digits (``digits``, the :func:`digits` fixture)."""
    return [
        "debug=limit",
        f"paths.root={root}",
        f"paths.data_dir={digits}",
        f"hydra.run.dir={root}/outputs/run",
        f"hydra.sweep.dir={root}/outputs/sweep",
    ]


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default data set's generated videos, made once (``paths.data_dir`` of every tiny run): the
    cache is keyed by the generator's settings, so a run that changes them makes its own beside."""
    from hydra import compose, initialize_config_dir

    from vidlab.restoration.config import validate
    from vidlab.restoration.datasets import moving_digits_clips

    folder = tmp_path_factory.mktemp("digits")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={folder}", "paths.output_dir=unused"])
    moving_digits_clips(validate(cfg).dataset)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Path:
    """One tiny trained restoration run (its root: ``mlruns.db``, ``outputs/run/checkpoints``, a logged
    model registered as ``stain_remover``), for the tests that read a finished run."""
    root = tmp_path_factory.mktemp("tiny run")
    train(*tiny_overrides(root, digits), "model.base_channels=6", "trainer.max_epochs=2",
          "logger.system_metrics_interval=1", "logger.register_as=stain_remover")
    return root


SWEEP = ["model.base_channels=4", "model.depth=2,3"]  # the session sweep's overrides (after -m and tiny_overrides)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Path:
    """One tiny two-job ``-m`` sweep (Hydra's basic launcher) into a fresh store: its root."""
    root = tmp_path_factory.mktemp("tiny sweep")
    outcome = train("-m", *tiny_overrides(root, digits), *SWEEP)
    (root / "sweep.log").write_text(outcome.stdout + outcome.stderr)  # what the launcher printed
    return root


def copy_of(folder: Path, to: Path) -> Path:
    """A test's own copy of a shared folder, to change."""
    return Path(shutil.copytree(folder, to, symlinks=True))


def copy_of_index(index: Path, to: Path) -> Path:
    """A test's own copy of an index made by :func:`make_index` (its videos, and its rows pointing at them)."""
    folder = copy_of(index.parent, to)
    table = pd.read_csv(folder / index.name)
    table["path"] = table.path.str.replace(str(index.parent), str(folder), regex=False)
    table.to_csv(folder / index.name, index=False)
    return folder / index.name


def moving_square_frames(n: int = 12, h: int = 40, w: int = 56) -> np.ndarray:
    """A bright square moving right on a dark background, uint8 RGB (n, h, w, 3)."""
    frames = np.full((n, h, w, 3), 16, np.uint8)
    for t in range(n):
        frames[t, 10:26, 2 + 3 * t : 18 + 3 * t] = (230, 200, 90)
    return frames


@pytest.fixture
def square_video(tmp_path: Path) -> Path:
    from vidlab.video import write_video

    return write_video(tmp_path / "square video é.mp4", moving_square_frames(), fps=24)


def write_h264(path: Path, n: int, size: tuple[int, int] = (48, 64), fps: int = 30, gop: int = 250) -> Path:
    """H.264 with B-frames and a long GOP (PyAV/libx264); frame i is uniformly grey level 4*i mod 256."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "2", "g": str(gop), "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(n):
            frame = np.full((*size, 3), (4 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mp4v(path: Path, n: int, size: tuple[int, int] = (48, 64), fps: int = 30) -> Path:
    """MPEG-4 part 2 via OpenCV; frame i is uniformly grey level 4*i mod 256."""
    from vidlab.video import write_video

    return write_video(path, (np.full((*size, 3), (4 * i) % 256, np.uint8) for i in range(n)), fps)


UCF_VIDEOS = {
    # relative path: (frames, writer)
    "Anomaly-Videos-Part-1/Abuse/Abuse001_x264.mp4": (40, "h264"),
    "Anomaly-Videos-Part-1/Abuse/Abuse002_x264.mp4": (50, "mp4v"),
    "Anomaly-Videos-Part-1/Abuse/Abuse003_x264.mp4": (33, "h264"),
    "Anomaly-Videos-Part-2/Robbery/Robbery001_x264.mp4": (40, "mp4v"),
    "Anomaly-Videos-Part-2/Robbery/Robbéry 002 x264.mp4": (41, "h264"),
    "Anomaly-Videos-Part-2/Robbery/Robbery003_x264.mp4": (24, "mp4v"),
    "Training-Normal-Videos-Part-1/Normal_Videos001_x264.mp4": (64, "h264"),
    "Training-Normal-Videos-Part-1/Normal_Videos002_x264.mp4": (48, "mp4v"),
    "Training-Normal-Videos-Part-1/Normal_Videos004_x264.mp4": (36, "mp4v"),
    "Training-Normal-Videos-Part-1/Normal_Videos005_x264.mp4": (10, "mp4v"),  # shorter than one clip
    "Testing_Normal_Videos/Normal_Videos_003_x264.mp4": (40, "h264"),
}
UCF_TRAIN_LIST = ["Abuse/Abuse001_x264.mp4", "Abuse/Abuse003_x264.mp4", "Robbery/Robbery001_x264.mp4",
                  "Robbery/Robbery003_x264.mp4", "Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4"]
UCF_TEST_LIST = ["Abuse/Abuse002_x264.mp4", "Robbery/Robbéry 002 x264.mp4",
                 "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4"]


def make_ucf_tree(root: Path) -> Path:
    """A UCF-Crime-like tree of tiny videos (H.264 with B-frames and mp4v) with official split lists."""
    for rel, (n, kind) in UCF_VIDEOS.items():
        (write_h264 if kind == "h264" else write_mp4v)(root / rel, n)
    (root / "Anomaly_Train.txt").write_text("\n".join(UCF_TRAIN_LIST) + "\n")
    (root / "Anomaly_Test.txt").write_text("\n".join(UCF_TEST_LIST) + "\n")
    return root


@pytest.fixture
def ucf_tree(tmp_path: Path) -> Path:
    return make_ucf_tree(tmp_path / "UCF Crime")


def run_extract(*overrides: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "extract.py"), *overrides], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"extract.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def make_index(folder: Path, videos: dict[str, tuple[int, str, str, int]], clip_len: int = 8, stride: int = 8) -> Path:
    """Write videos and an index_clips.csv for them: name -> (frames, writer, split, y)."""
    rows = []
    for name, (n, kind, split, y) in videos.items():
        path = (write_h264 if kind == "h264" else write_mp4v)(folder / "videos" / name, n)
        for i, start in enumerate(clip_starts(n, clip_len, stride, "drop")):
            rows.append([split, y, "Normal" if y == 0 else "Fight", str(path), i, start, start + clip_len, clip_len,
                         stride, 30.0, n])
    index = folder / "index_clips.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(index, index=False)
    return index


VIDEOS = {
    "normal_a.mp4": (40, "h264", "train", 0),
    "fight b.mp4": (33, "mp4v", "train", 1),
    "normal_c.mp4": (24, "mp4v", "val", 0),
    "fight_d.mp4": (32, "h264", "test", 1),
}

# A small extraction, shrunk as a user trying it would (random-init r3d_18, 4 frames per clip, small batches)
EXTRACT = ["backbone=r3d_18", "backbone.weights=null", "backbone.frames_per_clip=4", "extraction.preprocess=notebook",
           "extraction.notebook_size=32", "extraction.batch_size=3"]


@pytest.fixture(scope="session")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`VIDEOS` and their clip index (``index_clips.csv``), written once; a test that changes
    them works on a copy (:func:`copy_of` of the index's folder)."""
    return make_index(tmp_path_factory.mktemp("small index"), VIDEOS)


@pytest.fixture(scope="session")
def extraction(tmp_path_factory: pytest.TempPathFactory, small_index: Path) -> Path:
    """The small index extracted once with :data:`EXTRACT` (the root the run wrote into: its
    ``mlruns.db`` and ``outputs/embeddings/r3d_18_T4``)."""
    work = tmp_path_factory.mktemp("extraction")
    extract(f"index={small_index}", f"paths.root={work}", f"hydra.run.dir={work}/run", *EXTRACT)
    return work


EXTRACTED = "outputs/embeddings/r3d_18_T4"  # where :func:`extraction` wrote, under its root


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    """A small tmpfs at ``path``: a full or read-only disk for real. Mounting needs root (CI and this
    machine run as root); elsewhere the test is skipped with the reason."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
