"""Anomaly probes where the anomaly is localised: clip-, video- and frame-level ROC-AUC and wall time
of each probe, each run as one real ``train.py task=probe`` command on the same generated extraction,
beside a nearest-centroid floor and the oracle (the true anomalous clips), in one run.

    python benchmarks/probes.py [--probes logistic,mlp,mil_ranking] [--out DIR] [--seed 0] [--json PATH]
        [--scale-rows 106000]

The embeddings come from ``vidlab.probe.localised`` (default parameters): every clip carries its
video's label, the anomaly covers 10-30% of an anomalous video's clips, and anomalous videos' scenes
are shifted, so a clip classifier trained on video labels can score the scene instead of the anomaly.
Clip ROC-AUC is against those video labels; frame ROC-AUC against the temporal annotations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from vidlab.embeddings.manifest import Manifest
from vidlab.probe.data import check_manifest, load_splits
from vidlab.probe.localised import ANNOTATIONS, write_localised
from vidlab.probe.metrics import frame_level_auc, read_temporal_annotations, video_level_auc

ROOT = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"^((?:test|val)/\S+): (\S+)$")


def run_probe(name: str, folder: Path, runs: Path) -> dict:
    """One ``train.py`` run of probe ``name``: its printed val/test metrics and its wall time."""
    cmd = [sys.executable, "train.py", "task=probe", f"embeddings={folder}", f"probe={name}",
           f"probe.annotations={folder}/{ANNOTATIONS}", "logger=none", f"hydra.run.dir={runs}/{name}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"probe={name} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    metrics = {m[1]: float(m[2]) for m in map(METRIC.match, proc.stdout.splitlines()) if m}
    return {"probe": name, "metrics": metrics, "wall_s": wall, "command": cmd}


def _scored(test: pd.DataFrame, scores: np.ndarray, annotations: dict[str, list[tuple[int, int]]], name: str) -> dict:
    """Clip (against video labels), video (top clip) and frame ROC-AUC of test clip scores."""
    table = test.assign(score=scores)
    metrics = {"test/roc_auc": roc_auc_score(table.y, table.score), "test/video_roc_auc": video_level_auc(table),
               "test/frame_roc_auc": frame_level_auc(table, annotations)[0]}
    return {"probe": name, "metrics": {k: float(v) for k, v in metrics.items()}, "wall_s": None}


def references(folder: Path) -> list[dict]:
    """The nearest-centroid floor (class centroids of the train embeddings, standardised on train as
    the probes read them; score = squared distance to the normal centroid minus that to the
    anomalous one) and the oracle (score 1 on the clips the annotations mark anomalous, 0 elsewhere)."""
    splits = load_splits(folder, check_manifest(folder))
    train, test = splits["train"], splits["test"]
    clips = test.clips.assign(y=test.y)
    normal, anomalous = train.x[train.y == 0].mean(0), train.x[train.y == 1].mean(0)
    floor = ((test.x - normal) ** 2).sum(1) - ((test.x - anomalous) ** 2).sum(1)
    annotations = read_temporal_annotations(folder / ANNOTATIONS)
    truth = [any(s <= end - 1 and start <= e for s, e in annotations[Path(path).name])
             for path, start, end in zip(clips.path, clips.start_frame, clips.end_frame)]
    return [_scored(clips, floor, annotations, "nearest-centroid floor"),
            _scored(clips, np.array(truth, float), annotations, "oracle (true anomalous clips)")]


def table(results: list[dict]) -> str:
    cell = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    lines = ["| probe | clip ROC-AUC (video labels) | frame ROC-AUC | video ROC-AUC | wall s |",
             "|---|---|---|---|---|"]
    for r in results:
        m = r["metrics"]
        lines.append(f"| {r['probe']} | {cell(m.get('test/roc_auc'), '.3f')} "
                     f"| {cell(m.get('test/frame_roc_auc'), '.3f')} "
                     f"| {cell(m.get('test/video_roc_auc'), '.3f')} | {cell(r['wall_s'], '.1f')} |")
    return "\n".join(lines)


def logistic_at_scale(train_rows: int, dim: int, tmp: Path) -> dict:
    """The default probe on a UCF-Crime-sized train split (``train_rows`` x ``dim`` float16): wall time
    and peak RSS of the whole ``train.py`` run (``/usr/bin/time -v``), beside the float16 file size."""
    per_class = max(1, round(train_rows / (2 * 40)))  # 40 clips per video on average
    folder = write_localised(tmp / "scale",
                             videos={"train": per_class, "val": max(1, per_class // 3), "test": max(1, per_class // 2)},
                             dim=dim, seed=0)
    manifest = Manifest.read(folder)
    cmd = ["/usr/bin/time", "-v", sys.executable, "train.py", "task=probe", f"embeddings={folder}", "logger=none",
           f"hydra.run.dir={tmp}/scale_run"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"logistic at scale failed: {proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
    metrics = {m[1]: float(m[2]) for m in map(METRIC.match, proc.stdout.splitlines()) if m}
    grid = pd.read_csv(tmp / "scale_run/probe/c_grid.csv")
    return {"rows": {s: i.rows for s, i in manifest.splits.items()}, "dim": dim, "wall_s": wall,
            "peak_rss_mb": rss_kb / 1024,
            "train_float16_mb": (folder / "embeddings_train.npy").stat().st_size / 2**20, "C": grid.C.tolist(),
            "lbfgs_iterations": grid.iterations.tolist(), "converged": bool(grid.converged.all()), "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", default="logistic,mlp,mil_ranking", help="comma-separated conf/probe names")
    parser.add_argument("--out", type=Path, help="a new or empty folder for the extraction (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--json", type=Path, help="save the results here")
    parser.add_argument("--scale-rows", type=int, default=0,
                        help="also time probe=logistic on this many train rows (UCF-Crime: 106000)")
    parser.add_argument("--scale-dim", type=int, default=768, help="their dimension (swin3d_t: 768)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidlab-probes-") as tmp:
        folder = write_localised((args.out or Path(tmp) / "embeddings").resolve(), seed=args.seed)
        manifest = Manifest.read(folder)
        results = [run_probe(name, folder, Path(tmp) / "runs") for name in args.probes.split(",")] + references(folder)
        scale = logistic_at_scale(args.scale_rows, args.scale_dim, Path(tmp)) if args.scale_rows else None
    machine = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    rows = {s: info.rows for s, info in manifest.splits.items()}
    counts = ", ".join(f"{split} {n}" for split, n in rows.items())
    where = folder if args.out else "a temporary folder"
    print(f"machine: {machine['processor']}, {machine['cpus']} CPUs; embeddings: {where}, {counts} clips")
    print(f"generator: {json.dumps(manifest.generator)}")
    print(table(results))
    if scale:
        print(f"probe=logistic at scale: {scale['rows']} rows x {scale['dim']} "
              f"(train file {scale['train_float16_mb']:.0f} MiB float16): "
              f"{scale['wall_s']:.1f} s wall for the whole train.py run, peak RSS {scale['peak_rss_mb']:.0f} MiB, "
              f"L-BFGS iterations per C {scale['lbfgs_iterations']}, all converged: {scale['converged']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "folder": str(folder), "rows": rows,
                                         "generator": manifest.generator,
                                         "results": results, "logistic_at_scale": scale}, indent=2))


if __name__ == "__main__":
    main()
