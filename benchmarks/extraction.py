"""Clip-embedding extraction against every ceiling, in one run, on the same generated files.

    python benchmarks/extraction.py [--videos 16] [--seconds 120] [--device auto] [--out FILE.md]
    python benchmarks/extraction.py --quick     # about a minute: the loader's ratio to the decode ceiling

Videos are UCF-Crime-like: 320x240, 30 fps, H.264 (libx264 through PyAV, GOP 250, 2 B-frames);
clips of 32 frames every 16, T=8 sampled frames, swin3d_t's own preprocessing (resize 256, crop 224).
Each row says clips/s and its fraction of the ceiling it is bounded by:

- decode ceiling: PyAV decoding every frame of every video, nothing else (vidlab decodes each video
  once, in order), with the decoder settings vidlab's loader uses; one process, then one per core;
- loader alone: vidlab's extraction loader (``vidlab.embeddings.extraction.clip_loader``: the same
  stream, reader threads as ``extraction.num_workers`` plans them, exact swscale colour), one reader
  and one per core, each repetition timing the decode ceiling then the loader on the same videos
  (the median ratio and its range), on H.264 and MPEG-4 part 2; native frames (resized on the
  device, the CPU default) and resized in the readers (the GPU default); no model; beside them the
  bound of any hand-over design: one process per core running the stream inline on its own videos,
  and the peers asked for exactly the loader's frames (torchcodec ``get_frames_at``, decord
  ``get_batch``; ``benchmarks/peers.py``) in one process and one per core, on the same terms (the
  same videos, each repetition against the same ceiling), each checked for vidlab's exact pixels;
  video sets: H.264 and MPEG-4 at 320x240, H.264 at 1280x720 (``--codecs``);
- the notebook's loader (an OpenCV seek per sampled frame) and vidlab's ``read_frames`` asked for
  the same frames in a pool of processes;
- model alone on the device: synthetic uint8 frames at native size already on the device, the
  device half of preprocessing (resize, clips gathered from the batch's distinct frames, normalise) and the backbone,
  per precision / channels_last / torch.compile, with the cosine of each variant's embeddings to fp32's on the same
  clips;
- end to end: ``extract.py`` itself (a subprocess, random-init weights: no download), its steady
  clips/s (from the first batch) and its wall time;
- peak memory of extracting one long video at two lengths (``/usr/bin/time -v`` and the sum over the
  process tree, sampled).

Peers are optional (``make bench-peers`` installs them: FFmpeg's libraries from the OS, torchcodec and
decord from pip, not vidlab dependencies); a missing one prints its reason instead of a number.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import psutil
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_loader import NotebookClipDataset, _frames, write_h264  # noqa: E402
from peers import PEERS, unavailable  # noqa: E402
from vidlab.embeddings.backbones import load_backbone, weights_enum  # noqa: E402
from vidlab.embeddings.chunks import make_chunks, sample_indices  # noqa: E402
from vidlab.embeddings.clip_dataset import VideoClipStream  # noqa: E402
from vidlab.embeddings.clip_index import COLUMNS, clip_starts  # noqa: E402
from vidlab.embeddings.embedding_module import EmbeddingExtractor  # noqa: E402
from vidlab.embeddings.extraction import clip_loader, load_index, reader_plan  # noqa: E402
from vidlab.embeddings.manifest import Manifest  # noqa: E402
from vidlab.embeddings.preprocess import WeightsPreprocess  # noqa: E402
from vidlab.video import count_frames, read_frames, write_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP_LEN, STRIDE, T, BACKBONE = 32, 16, 8, "swin3d_t"
CORES = len(os.sched_getaffinity(0))
OUT: list[Path] = []  # the markdown file, written line by line (a run stopped at a time limit keeps its rows)


def say(line: str = "") -> None:
    print(line, flush=True)
    for out in OUT:
        with out.open("a") as f:
            f.write(line + "\n")


def rate(x: float) -> str:
    """clips/s with the digits that mean something at each size."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


# ---------------------------------------------------------------------------------------------- data
CODECS = {"h264": "H.264 (libx264, GOP 250, 2 B-frames)", "mpeg4": "MPEG-4 part 2 (OpenCV mp4v)"}


UCF_SIZE = (240, 320)  # (height, width) of UCF-Crime's videos


def video_set(text: str) -> tuple[str, tuple[int, int]]:
    """``codec`` or ``codec@WxH`` (``h264@1280x720``) as (codec, (height, width)); UCF-Crime's 320x240 by default."""
    codec, _, size = text.partition("@")
    if codec not in CODECS:
        raise SystemExit(f"unknown codec {codec!r} in {text!r}: one of {', '.join(CODECS)}")
    if not size:
        return codec, UCF_SIZE
    width, height = (int(n) for n in size.split("x"))
    return codec, (height, width)


def _write_one(args: tuple[Path, int, int, str, tuple[int, int]]) -> None:
    path, frames, seed, codec, size = args
    tmp = path.with_name(f".{path.name}")
    if codec == "h264":
        write_h264(tmp, _frames(frames, seed, size), size, x264_params="threads=1")  # one encoder per core
    else:
        write_video(tmp, _frames(frames, seed, size), 30, "mp4v")
    tmp.replace(path)


def make_videos(folder: Path, videos: int, frames: int, codec: str = "h264",
                size: tuple[int, int] = UCF_SIZE) -> list[Path]:
    """``videos`` files of ``frames`` frames (:data:`CODECS`, ``size`` as (height, width)), kept between
    runs: one encoded per core (distinct content), the rest copies of those (decoding costs the same;
    encoding takes minutes)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = ("ucf_like" if codec == "h264" else codec) + ("" if size == UCF_SIZE else f"_{size[1]}x{size[0]}")
    paths = [folder / f"{name}_{i}_{frames}.mp4" for i in range(videos)]
    unique = paths[:CORES]
    todo = [(p, frames, i, codec, size) for i, p in enumerate(unique) if not p.exists()]
    if todo:
        with mp.get_context("spawn").Pool(min(CORES, len(todo))) as pool:
            pool.map(_write_one, todo)
    for i, path in enumerate(paths[CORES:], CORES):
        if not path.exists():
            shutil.copyfile(unique[i % CORES], path)
    return paths


def repeat_video(segment: Path, out: Path, times: int) -> None:
    """``segment`` played ``times`` times, by remuxing its packets with shifted timestamps (no re-encoding:
    a 100,000-frame H.264 file in seconds, still GOP 250 with B-frames)."""
    tmp = out.with_name(f".{out.name}")
    with av.open(str(tmp), "w") as dst:
        with av.open(str(segment)) as src:
            template = src.streams.video[0]
            stream = dst.add_stream_from_template(template)
            packets = [p for p in src.demux(template) if p.size]
            span = max(p.pts for p in packets) - min(p.pts for p in packets) + packets[0].duration
        for k in range(times):
            with av.open(str(segment)) as src:
                for packet in src.demux(src.streams.video[0]):
                    if not packet.size:
                        continue
                    packet.pts += k * span
                    packet.dts += k * span
                    packet.stream = stream
                    dst.mux(packet)
    tmp.replace(out)


def write_index(paths: list[Path], csv: Path, stride: int = STRIDE) -> Path:
    """An index_clips.csv in vidlab's format (exact frame counts: packets, checked against the writer)."""
    rows = []
    for path in paths:
        n = count_frames(path)
        for i, start in enumerate(clip_starts(n, CLIP_LEN, stride, "drop")):
            rows.append(["test", 0, "Normal", str(path), i, start, start + CLIP_LEN, CLIP_LEN, stride, 30.0, n])
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, index=False)
    return csv


# -------------------------------------------------------------------------------------------- ceilings
def decode_every_frame(args: tuple[str, int]) -> int:
    """What any exact reader must do at least: decode every frame, with the decoder threads vidlab's readers use."""
    path, threads = args
    with av.open(path) as container:
        container.streams.video[0].thread_count = threads
        return sum(1 for _ in container.decode(video=0))


def timed_pool(fn: Callable, items: list, processes: int) -> float:
    """Seconds for ``processes`` warm processes (the peers imported) to map ``fn`` over ``items`` (1: in this
    process)."""
    if processes == 1:
        start = time.perf_counter()
        for item in items:
            fn(item)
        return time.perf_counter() - start
    with mp.get_context("spawn").Pool(processes, initializer=unavailable) as pool:
        pool.map(abs, range(processes))  # the workers exist and have imported this module
        start = time.perf_counter()
        pool.map(fn, items, chunksize=1)
        return time.perf_counter() - start


def decode_ceiling(table: pd.DataFrame, processes: int) -> float:
    """clips/s of decoding every frame of the table's videos (:func:`decode_every_frame`)."""
    threads = reader_plan(processes, 1).decode_threads
    return len(table) / timed_pool(decode_every_frame, [(p, threads) for p in table.abs_path.unique()], processes)


def loader_rate(table: pd.DataFrame, readers: int, resize_in_readers: bool, batch: int) -> float:
    """Steady clips/s of vidlab's extraction loader, no model, its threads as ``extraction.num_workers=readers``
    plans them: timed from its first batch, so the readers' start-up is left out. With the resize on
    the device, the loader hands over each batch's distinct frames at native size (the device resizes
    them and gathers the clips)."""
    preprocess = WeightsPreprocess(weights_enum(BACKBONE, None))
    stream = VideoClipStream(make_chunks(table, T, batch), preprocess.spatial if resize_in_readers else None, "exact",
                             *reader_plan(readers, 1))
    it = iter(clip_loader(stream, pin_memory=False))
    next(it)
    start, clips = time.perf_counter(), 0
    for item in it:
        clips += len(item["rows"])
    return clips / (time.perf_counter() - start)


def _stream_inline(args: tuple[pd.DataFrame, int, int]) -> int:
    """One video's clips through vidlab's stream in the calling thread: a reader's whole work with
    nothing handed to another thread or process."""
    table, batch, decode_threads = args
    stream = VideoClipStream(make_chunks(table, T, batch), None, "exact", 0, False, decode_threads)
    return sum(len(item["rows"]) for item in stream)


def no_handover_rate(table: pd.DataFrame, batch: int) -> float:
    """clips/s of one process per core, each running the stream inline on its own videos, decoding as
    a reader per core does: the bound of any hand-over design (a shared-memory ring of worker
    processes included)."""
    threads = reader_plan(CORES, 1).decode_threads
    jobs = [(t, batch, threads) for _, t in table.groupby("abs_path", sort=False)]
    return len(table) / timed_pool(_stream_inline, jobs, CORES)


def ratio_row(label: str, who: str, table: pd.DataFrame, processes: int, measure: Callable[[], float],
              reps: int, same: str = "") -> None:
    """A row of ``measure()`` (clips/s) against the decode ceiling of ``table`` in ``processes``: each
    repetition times the ceiling, then ``measure``, back to back; the median ratio and its range (a
    shared machine's speed drifts between seconds, the ratio much less). ``same``: whether its pixels
    are vidlab's exact ones."""
    ratios, rates = [], []
    for _ in range(reps):
        ceiling = decode_ceiling(table, processes)
        rates.append(measure())
        ratios.append(rates[-1] / ceiling)
    say(f"| {label} | {who} | {rate(float(np.median(rates)))} | **{np.median(ratios):.2f}** | "
        f"{min(ratios):.2f}-{max(ratios):.2f} | {same} |")


def loader_table(subsets: dict[int, pd.DataFrame], label: str, batch: int, reps: int,
                 resize_in_readers: bool = False, peers: bool = False) -> None:
    """Rows of the loader against the decode ceiling of the same videos, one reader and one per core;
    with ``peers``, each peer reader asked for exactly the loader's frames (a process per reader), on
    the same terms: the same videos, repetitions of the same ceiling, pixels checked on the first video."""
    for n, t in subsets.items():
        who = f"{n} reader{'s' if n > 1 else ''}" + (", decoding apart" if reader_plan(n, 1).decode_apart else "")
        ratio_row(label, f"vidlab loader, {who}", t, n, partial(loader_rate, t, n, resize_in_readers, batch), reps,
                  "reference")
    if not peers:
        return
    missing = unavailable()  # imports the peers in this process too
    first = str(subsets[1].abs_path.iloc[0])
    wanted = wanted_frames(subsets[1].head(64))[first]
    ours = read_frames(first, wanted, "exact")
    for name in PEERS:
        if name in missing:
            say(f"| {label} | {name} | not measured: {missing[name]} | | | |")
            continue
        same = same_pixels(ours, PEERS[name](first, wanted))
        for n, t in subsets.items():
            ratio_row(label, f"{name}, {n} process{'es' if n > 1 else ''}, the loader's frames", t, n,
                      partial(peer_rate, name, t, n), reps, same)


def peer_rate(name: str, table: pd.DataFrame, processes: int) -> float:
    """clips/s of a reader (``vidlab`` or a peer) asked for every frame the table's clips sample, a video per
    task, in ``processes`` warm processes."""
    wanted = wanted_frames(table)
    return len(table) / timed_pool(_peer_job, [(name, p, wanted[p]) for p in wanted], processes)


def notebook_rate(table: pd.DataFrame, workers: int, clips: int) -> float:
    """The notebook's loader (an OpenCV seek and read per sampled frame) on ``clips`` clips spread over the videos."""
    sample = table.groupby("abs_path").head(max(1, clips // table.abs_path.nunique())).reset_index(drop=True)
    loader = DataLoader(NotebookClipDataset(sample), batch_size=16, num_workers=workers,
                        multiprocessing_context="spawn" if workers else None, persistent_workers=bool(workers))
    for _ in loader:  # first pass starts the workers
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(sample) / (time.perf_counter() - start)


def notebook_frames(path: str, indices: list[int]) -> np.ndarray:
    """The frames the notebook's loader reads (before its resize): an OpenCV seek, then a read, per frame."""
    cap, frames = cv2.VideoCapture(path), []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else np.zeros_like(frames[-1]))
    cap.release()
    return np.stack(frames)


def same_pixels(ours: np.ndarray, theirs: np.ndarray) -> str:
    if ours.shape != theirs.shape:
        return f"no: shape {theirs.shape} vs {ours.shape}"
    if np.array_equal(ours, theirs):
        return "yes"
    frames = np.mean([not np.array_equal(a, b) for a, b in zip(ours, theirs)])
    return f"no: {frames:.0%} of frames differ, max {np.abs(ours.astype(int) - theirs).max()} levels"


def wanted_frames(table: pd.DataFrame) -> dict[str, list[int]]:
    """Per video, the sorted distinct frames its clips sample (what every reader is asked for)."""
    wanted: dict[str, set[int]] = {}
    for path, start, end in zip(table.abs_path, table.start_frame, table.end_frame):
        wanted.setdefault(path, set()).update(sample_indices(start, end, T).tolist())
    return {path: sorted(frames) for path, frames in wanted.items()}


def _peer_job(args: tuple[str, str, list[int]]) -> int:
    name, path, indices = args
    return len(read_frames(path, indices, "exact") if name == "vidlab" else PEERS[name](path, indices))


# ----------------------------------------------------------------------------------------------- model
def model_rates(device: torch.device, batch: int, iters: int, compile_too: bool,
                height: int, width: int) -> list[tuple]:
    """(variant, clips/s, min cosine to fp32) for the device half of preprocessing plus the backbone."""
    torch.manual_seed(0)
    preprocess = WeightsPreprocess(weights_enum(BACKBONE, None))
    distinct = (batch + 1) * T // 2  # consecutive clips share half their frames (stride = half a clip)
    frames = torch.randint(0, 256, (iters, distinct, height, width, 3), dtype=torch.uint8, device=device)
    frames = frames.permute(0, 1, 4, 2, 3)  # (iters, U, C, H, W), channels-last like the loader's
    clips = (torch.arange(batch)[:, None] * (T // 2) + torch.arange(T)).to(device)
    variants = [("fp32", None, False, False), ("bf16-mixed", torch.bfloat16, False, False),
                ("bf16-mixed + channels_last", torch.bfloat16, True, False)]
    if compile_too:
        variants.append(("bf16-mixed + channels_last + compile", torch.bfloat16, True, True))
    results, reference = [], None
    for name, dtype, channels_last, compiled in variants:
        torch.manual_seed(0)
        backbone = load_backbone(BACKBONE, None).to(device)
        module = EmbeddingExtractor(backbone, preprocess.normalize, preprocess.spatial, channels_last,
                                    compiled).to(device)
        for i in range(2 if device.type == "cuda" else 1):  # warm-up (compilation, cuDNN's choice of kernels)
            _embed(module, frames[i % iters], clips, dtype)
        start = time.perf_counter()
        embeddings = [_embed(module, frames[i], clips, dtype) for i in range(iters)]
        seconds = time.perf_counter() - start
        embeddings = torch.cat(embeddings).double()
        reference = embeddings if reference is None else reference
        cosine = torch.nn.functional.cosine_similarity(embeddings, reference, dim=1).min().item()
        results.append((name, iters * batch / seconds, cosine))
    return results


def device_resize_check(device: torch.device, frames: np.ndarray) -> tuple[float, int, float]:
    """Real frames resized by torchvision on ``device`` against the CPU (the readers' pixels): the
    fraction of bytes that differ, the largest difference, and the min cosine of fp32 embeddings."""
    preprocess = WeightsPreprocess(weights_enum(BACKBONE, None))
    x = torch.from_numpy(frames[: len(frames) // T * T]).permute(0, 3, 1, 2)
    clips = torch.arange(len(x)).view(-1, T)
    on_cpu, on_device = preprocess.spatial(x), preprocess.spatial(x.to(device)).cpu()
    differ = (on_cpu != on_device).float().mean().item()
    largest = int((on_cpu.int() - on_device.int()).abs().max())
    torch.manual_seed(0)
    backbone = load_backbone(BACKBONE, None).to(device)
    resized_here = EmbeddingExtractor(backbone, preprocess.normalize).to(device)
    resized_there = EmbeddingExtractor(backbone, preprocess.normalize, preprocess.spatial).to(device)
    a = torch.cat([_embed(resized_here, f.to(device), c.to(device) - c[0, 0], None)
                   for f, c in zip(on_cpu.split(8 * T), clips.split(8))]).double()
    b = torch.cat([_embed(resized_there, f.to(device), c.to(device) - c[0, 0], None)
                   for f, c in zip(x.split(8 * T), clips.split(8))]).double()
    return differ, largest, torch.nn.functional.cosine_similarity(a, b, dim=1).min().item()


def _embed(module: EmbeddingExtractor, frames: torch.Tensor, clips: torch.Tensor,
           dtype: torch.dtype | None) -> torch.Tensor:
    """One batch as the extraction's predict step runs it (Lightning's bf16-mixed is this autocast)."""
    with torch.inference_mode(), torch.autocast(frames.device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        out = module.predict_step({"frames": frames, "clips": clips, "rows": None, "padded": None}, 0)
    if out["copied"] is not None:
        out["copied"].synchronize()
    return out["emb"]


# ------------------------------------------------------------------------------------------ end to end
def run_extract(index: Path, work: Path, overrides: list[str], rss: bool = False) -> dict:
    """``extract.py`` itself; its manifest's steady clips/s, the wall time, and peak memory when asked."""
    command = [sys.executable, str(ROOT / "extract.py"), f"index={index}", f"paths.root={work}",
               f"hydra.run.dir={work}/run", "logger=none", "backbone.weights=null", *overrides]
    timer = ["/usr/bin/time", "-v"] if rss and Path("/usr/bin/time").exists() else []
    start = time.perf_counter()
    proc = subprocess.Popen(timer + command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    tree_peak = [0]
    if rss:
        threading.Thread(target=_sample_tree, args=(proc.pid, tree_peak), daemon=True).start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"extract.py failed ({proc.returncode}): {err[-3000:]}")
    manifest = Manifest.read(next((work / "outputs/embeddings").glob("*/manifest.json")).parent)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return {"clips": manifest.index.rows, "wall": wall, **manifest.throughput,
            "max_rss_mb": int(peak.group(1)) / 1024 if peak else None, "tree_mb": tree_peak[0] / 2**20}


def _sample_tree(pid: int, peak: list[int]) -> None:
    """Peak of the summed RSS of a process and its descendants, every 0.2 s."""
    try:
        root = psutil.Process(pid)
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            total = 0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(0.2)
    except psutil.Error:
        pass


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=120, help="length of each video")
    parser.add_argument("--device", default="auto", help="model device: auto (cuda if present) | cpu | cuda")
    parser.add_argument("--batch", type=int, default=0, help="clips per batch; 0: 32 on a GPU, 16 on a CPU")
    parser.add_argument("--model-batch", type=int, default=0,
                        help="clips per batch for the model alone; 0: --batch on a GPU, 2 on a CPU")
    parser.add_argument("--model-iters", type=int, default=0, help="timed batches per model variant; 0: 20 GPU, 2 CPU")
    parser.add_argument("--e2e-clips", type=int, default=0,
                        help="clips extracted end to end; 0: every clip on a GPU, 48 on a CPU")
    parser.add_argument("--e2e", nargs="*", default=None,
                        help="extract.py overrides per end-to-end row (';'-separated)")
    parser.add_argument("--e2e-readers", default="1,2,4,8",
                        help="on a GPU, extra end-to-end rows at these extraction.num_workers (fewer than the cores)")
    parser.add_argument("--single-videos", type=int, default=4, help="videos read by the one-process rows")
    parser.add_argument("--notebook-clips", type=int, default=32, help="clips per process for the notebook's loader")
    parser.add_argument("--rss-frames", default="25000,100000", help="two lengths of the long video")
    parser.add_argument("--rss-overrides", default=None, help="extract.py overrides for the memory runs "
                        "(';'-separated); default: none on a GPU, r3d_18 at T=4 on a CPU")
    parser.add_argument("--rss-stride", type=int, default=0, help="clip stride of the memory runs (larger: "
                        "fewer clips, the whole video still decoded); 0: 16 on a GPU, 400 on a CPU")
    parser.add_argument("--data", default=str(ROOT / "data" / "bench_extraction"))
    parser.add_argument("--sections", default="loader,readers,e2e,memory,model", help="which tables, comma-separated")
    parser.add_argument("--codecs", default="h264,mpeg4,h264@1280x720",
                        help=f"video sets of the loader table: codec ({', '.join(CODECS)}) or codec@WxH; 320x240 "
                             "unless given")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each loader row (median and range)")
    parser.add_argument("--quick", action="store_true", help="about a minute: the loader table alone, H.264 native "
                        "frames, 2 videos per core x 60 s, 5 repetitions")
    parser.add_argument("--out", default="", help="also write the tables to this markdown file")
    if parser.parse_known_args(argv)[0].quick:  # its defaults; any option given still wins
        parser.set_defaults(sections="loader", codecs="h264", videos=2 * CORES, seconds=60, single_videos=2, reps=5)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (32 if gpu else 16)
    if args.rss_overrides is None:  # a CPU extracts swin3d_t at about 1 clip/s: 100,000 frames need a lighter run
        args.rss_overrides = "" if gpu else "backbone=r3d_18;backbone.frames_per_clip=4"
    args.rss_stride = args.rss_stride or (STRIDE if gpu else 400)
    folder = Path(args.data)
    sections = set(args.sections.split(","))
    if args.out:
        OUT.append(Path(args.out))
        OUT[0].write_text("")

    start = time.perf_counter()
    paths = make_videos(folder, args.videos, args.seconds * 30)
    index = write_index(paths, folder / "index_clips.csv")
    table = load_index(index, None)
    clips = len(table)
    cpu_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor())
    say(f"machine: {cpu_name}, {CORES} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
        + (f"; {torch.cuda.get_device_name(device)}" if gpu else "; no GPU"))
    say(f"software: torch {torch.__version__}, PyAV {av.__version__} (FFmpeg {av.library_versions['libavcodec']}), "
        f"Python {platform.python_version()}")
    say(f"data: {args.videos} H.264 videos x {args.seconds} s (320x240, 30 fps, GOP 250, 2 B-frames), "
        f"{clips} clips (32 frames, stride 16, T=8), made in {time.perf_counter() - start:.0f} s")
    say()

    # decode ceilings (every table's yardstick): one process on the first --single-videos videos, one per core on all
    subsets = {1: table[table.abs_path.isin(table.abs_path.unique()[: args.single_videos])], CORES: table}
    if "loader" in sections:
        say(f"Loader alone against the decode ceiling of the same videos (one reader: the first {args.single_videos} "
            f"videos' {len(subsets[1])} clips against one decoding process; one per core: all clips against one "
            f"decoding process per core), exact colour, batch {batch}, {args.reps} repetitions of ceiling then loader:")
        say()
        say("| videos, frames handed over | reader | clips/s (median) | of the decode ceiling (median) | range "
            "| same pixels as vidlab's exact |")
        say("|---|---|---|---|---|---|")
        for name in args.codecs.split(","):
            codec, size = video_set(name)
            if (codec, size) == ("h264", UCF_SIZE):
                by_set = subsets
            else:
                other = load_index(write_index(make_videos(folder, args.videos, args.seconds * 30, codec, size),
                                               folder / f"index_{name.replace('@', '_')}.csv"), None)
                by_set = {1: other[other.abs_path.isin(other.abs_path.unique()[: args.single_videos])], CORES: other}
            label = f"{CODECS[codec]}, {size[1]}x{size[0]}, native size (resize on the device)"
            loader_table(by_set, label, batch, args.reps, peers=not args.quick)
            if not args.quick and CORES > 1:
                ratio_row(label, f"{CORES} processes, inline, no hand-over (bound)", by_set[CORES], CORES,
                          partial(no_handover_rate, by_set[CORES], batch), args.reps)
        if not args.quick:
            loader_table(subsets, f"{CODECS['h264']}, 320x240, resized in the readers", batch, 1,
                         resize_in_readers=True)
        say()
    if not sections - {"loader"}:
        say(f"benchmark wall time: {time.perf_counter() - start:.0f} s")
        return
    ceiling = {n: decode_ceiling(t, n) for n, t in subsets.items()}
    iters, model_batch = args.model_iters or (20 if gpu else 2), args.model_batch or (batch if gpu else 2)
    # the model alone, measured once: the model table's rows, and the end-to-end rows' bound
    model_rows = model_rates(device, model_batch, iters, gpu, 240, 320) if sections & {"e2e", "model"} else []
    wanted, first = wanted_frames(table), str(paths[0])
    if "readers" in sections:
        say(f"One process: the first {args.single_videos} videos ({len(subsets[1])} clips); "
            f"one per core: all {clips} clips.")
        say()
        say("| reader | processes | clips/s | of the decode ceiling | same pixels as vidlab exact |")
        say("|---|---|---|---|---|")
        for n in subsets:
            say(f"| decode ceiling: PyAV, every frame, no conversion, {reader_plan(n, 1).decode_threads or 'FFmpeg'} "
                f"thread(s) each | {n} | {rate(ceiling[n])} | 1.00 | |")
        ours = read_frames(first, wanted[first], "exact")
        same = same_pixels(ours, notebook_frames(first, wanted[first]))
        for n, t in subsets.items():
            clips_s = notebook_rate(t, 0 if n == 1 else n, args.notebook_clips * n)
            say(f"| notebook loader: OpenCV seek + read per sampled frame | {n} | {rate(clips_s)} "
                f"| {clips_s / ceiling[n]:.3f} | {same} |")
        for n, t in subsets.items():  # vidlab's reader on the peers' terms (their rows: the loader table)
            clips_s = peer_rate("vidlab", t, n)
            say(f"| vidlab read_frames, exact colour (asked for the same frames) | {n} | {rate(clips_s)} | "
                f"{clips_s / ceiling[n]:.2f} | reference |")
        say()

    if "e2e" in sections:
        # end to end
        e2e_index = index
        if not gpu or args.e2e_clips:
            e2e_index = folder / "index_e2e.csv"
            pd.read_csv(index).head(args.e2e_clips or 48).to_csv(e2e_index, index=False)
        fast = "extraction.precision=bf16-mixed;extraction.channels_last=true;extraction.resize_on=device"
        default_rows = ["", fast, f"{fast};extraction.compile=true"] if gpu else [""]
        if gpu:  # the readers the GPU needs: where the rows stop gaining, the model no longer waits
            default_rows += [f"{fast};extraction.num_workers={n}" for n in args.e2e_readers.split(",")
                             if int(n) < CORES]
        model_alone = {name: clips_s for name, clips_s, _ in model_rows}
        bound = min(model_alone["bf16-mixed + channels_last"], ceiling[CORES])
        say(f"End to end: extract.py ({len(pd.read_csv(e2e_index))} clips, batch {batch}, readers: one per core "
            "unless set; steady = from the first batch, wall = the whole command). Bound: min(model alone, "
            f"bf16-mixed + channels_last, {rate(model_alone['bf16-mixed + channels_last'])} clips/s; all-core decode "
            f"ceiling, {rate(ceiling[CORES])} clips/s) = {rate(bound)} clips/s:")
        say()
        say("| extract.py overrides | steady clips/s | of the bound | of the all-cores decode ceiling | start-up s "
            "| wall s |")
        say("|---|---|---|---|---|---|")
        for row in (args.e2e if args.e2e is not None else default_rows):
            overrides = [o for o in row.split(";") if o] + [f"extraction.batch_size={batch}"]
            with tempfile.TemporaryDirectory(dir=folder) as work:
                try:
                    r = run_extract(e2e_index, Path(work), overrides)
                except RuntimeError as err:
                    say(f"| {' '.join(overrides)} | failed: {str(err).splitlines()[-1]} | | | | |")
                    continue
            steady = r["clips_per_second_last_run"]
            say(f"| {' '.join(overrides)} | {rate(steady)} | **{steady / bound:.2f}** | "
                f"{steady / ceiling[CORES]:.2f} | {r['startup_seconds_last_run']:.1f} | {r['wall']:.1f} |")
        say()

    if "memory" in sections:
        # memory
        lengths = [int(n) for n in args.rss_frames.split(",")]
        segment = make_videos(folder, 1, 2_500)[0]
        say(f"Peak memory of one extract.py over one long video, a clip every {args.rss_stride} frames (max RSS of one "
            "process from /usr/bin/time -v; sum over the process tree, sampled every 0.2 s):")
        say()
        say("| video frames | clips | max RSS (MB) | process tree peak (MB) | steady clips/s |")
        say("|---|---|---|---|---|")
        for n in lengths:
            long_video = folder / f"long_{n}.mp4"
            if not long_video.exists():
                repeat_video(segment, long_video, n // 2_500)
            long_index = write_index([long_video], folder / f"index_long_{n}.csv", args.rss_stride)
            overrides = [o for o in args.rss_overrides.split(";") if o] + [f"extraction.batch_size={batch}"]
            with tempfile.TemporaryDirectory(dir=folder) as work:
                try:
                    r = run_extract(long_index, Path(work), overrides, rss=True)
                except RuntimeError as err:
                    say(f"| {n} | failed: {str(err).splitlines()[-1]} | | | |")
                    continue
            rss = f"{r['max_rss_mb']:.0f}" if r["max_rss_mb"] else "no /usr/bin/time"
            say(f"| {count_frames(long_video)} | {r['clips']} | {rss} | {r['tree_mb']:.0f} "
                f"| {rate(r['clips_per_second_last_run'])} |")
        say()
    if "model" in sections:
        # model alone
        say(f"Model alone on {device.type} ({BACKBONE}, T={T}, batch {model_batch}, native 240x320 uint8 in, "
            "resize+crop+normalise on the device):")
        say()
        say("| variant | clips/s | min cosine to fp32 |")
        say("|---|---|---|")
        for name, clips_s, cosine in model_rows:
            say(f"| {name} | {rate(clips_s)} | {cosine:.6f} |")
        say()
        if gpu:
            differ, largest, cosine = device_resize_check(device, read_frames(first, wanted[first][:512], "exact"))
            say(f"Resize on {torch.cuda.get_device_name(device)} vs on the CPU "
                "(torchvision, the same 512 real frames): "
                f"{differ:.4%} of bytes differ (max {largest} level), fp32 embeddings min cosine {cosine:.7f}.")
            say()

    say(f"benchmark wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
