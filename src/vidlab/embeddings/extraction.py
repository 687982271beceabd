"""``extract.py stage=extract``: an index in, float16 embeddings, labels, valid masks and a manifest out.

Resumable: the output folder is fixed by the config, rows are marked done as they are written, and a
rerun of the same command computes only the batches not done, ending with the same files as an
uninterrupted run. The manifest is written last, atomically.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import pandas as pd
import torch
import torchvision
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from vidlab.embeddings.backbones import backbone_spec, load_backbone, weights_enum
from vidlab.embeddings.chunks import make_chunks
from vidlab.embeddings.clip_dataset import VideoClipStream
from vidlab.embeddings.clip_index import COLUMNS, file_sha256
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.embedding_module import EmbeddingExtractor, StoreWriter
from vidlab.embeddings.index_check import check_index, padding_allowed, read_index, refuse_violations, resolve_paths
from vidlab.embeddings.manifest import FILE, KINDS, IndexRef, Manifest, SplitInfo
from vidlab.embeddings.preprocess import NotebookPreprocess, WeightsPreprocess, resize_on_device
from vidlab.embeddings.store import EmbeddingStore
from vidlab.errors import InputError
from vidlab.files import read_jsonl
from vidlab.stops import on_stop_say
from vidlab.trainer import StopOnSignal, checked_trainer_args

# The manifest says how frames became RGB: embeddings of the same clips differ between the two.
COLOUR_CONVERSIONS = {
    "exact": "swscale, identical to PyAV to_ndarray(format='rgb24')",
    "fast": "OpenCV cvtColor COLOR_YUV2RGB_I420 on 8-bit BT.601 limited-range 4:2:0 frames of even size, "
            "swscale on others",
}

class IndexFormatError(InputError):
    """The index is not in the clip-index format, or has no clip."""


def load_index(path: Path, path_root: str | None) -> pd.DataFrame:
    """The index with ``row`` (global id, file order), ``pos`` (row within its split), ``abs_path``."""
    table = read_index(path)
    if list(table.columns) != COLUMNS:
        raise IndexFormatError(f"index: {path} has columns {list(table.columns)}; expected {COLUMNS}")
    if table.empty:
        raise IndexFormatError(f"index: {path} has no clip")
    table["row"] = np.arange(len(table))
    table["pos"] = table.groupby("split").cumcount()
    table["abs_path"] = resolve_paths(table["path"], path, path_root)
    return table


@dataclass
class ExtractionResult:
    folder: Path
    metrics: dict = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)

    def artifacts(self, max_mb: float, client: MlflowClient, run_id: str) -> list[tuple[str, Path]]:
        """The embedding files themselves when small enough; otherwise a tag with their location."""
        data = [p for p in sorted(self.folder.glob("*.npy")) if not p.name.startswith("done_")]
        size_mb = sum(p.stat().st_size for p in data) / 2**20
        client.set_tag(run_id, "embeddings_dir", str(self.folder))
        if size_mb <= max_mb:
            return [("embeddings", p) for p in data]
        client.set_tag(run_id, "embeddings_not_logged", f"{size_mb:.0f} MB > extraction.max_artifact_mb={max_mb}")
        return []


def _preprocess(spec: ExtractSpec):
    if spec.extraction.preprocess == "notebook":
        return NotebookPreprocess(spec.extraction.notebook_size)
    return WeightsPreprocess(weights_enum(spec.backbone.name, spec.backbone.weights))


def _fingerprint(spec: ExtractSpec, index_sha: str, preprocess) -> dict:
    """Every setting that changes the numbers: a rerun that differs in one is refused, never mixed."""
    x, weights = spec.extraction, spec.backbone.weights
    weights_file = weights is not None and Path(weights).is_file()
    return {"index_sha256": index_sha, "backbone": asdict(spec.backbone), "preprocess": preprocess.description,
            "batch_size": x.batch_size, "seed": x.seed, "colour": x.colour, "precision": x.precision,
            "compile": x.compile, "channels_last": x.channels_last, "resize_on": x.resize_on,
            "weights_sha256": file_sha256(Path(weights)) if weights_file else None}


class ReaderPlan(NamedTuple):
    """How ``VideoClipStream`` spends the cores (see its docstring)."""

    readers: int
    decode_apart: bool
    decode_threads: int


def reader_plan(num_workers: int | None, devices: int) -> ReaderPlan:
    """``extraction.num_workers`` readers per rank (0: decode in the consuming thread), by default every
    core this process may use, shared by the devices of this node: decoding is the CPU's whole job
    during extraction. A reader with a spare core beside it decodes in one thread and converts in
    another; PyAV decodes a video in one thread when every core has a reader (FFmpeg's own count, a
    thread per core in every decoder, oversubscribes the machine), else as FFmpeg chooses, which
    decoded faster than naming the core count (docs/benchmarks.md, "Extraction")."""
    cores = max(1, len(os.sched_getaffinity(0)) // max(1, devices))
    readers = cores if num_workers is None else num_workers
    return ReaderPlan(readers, 0 < readers and 2 * readers <= cores, 1 if readers >= cores else 0)


def clip_loader(stream: VideoClipStream, pin_memory: bool) -> DataLoader:
    """The extraction's loader: the stream decodes in reader threads of this process
    (``stream.readers``), so the DataLoader starts no worker process and only pins batches for CUDA."""
    return DataLoader(stream, batch_size=None, pin_memory=pin_memory)


def is_child_rank() -> bool:
    """A DDP rank > 0: Lightning's rank (``RANK``, ``LOCAL_RANK`` set by its launcher, ``SLURM_PROCID``
    where Slurm starts every rank), or a node's first process on a node other than the first."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


@dataclass
class PreparedExtraction:
    """What :func:`prepare_extraction` checked, handed to :func:`extract_embeddings`; ``store`` holds
    the output folder's lock (rank 0) from then on: the caller unlocks it."""

    table: pd.DataFrame
    index_sha: str
    preprocess: WeightsPreprocess | NotebookPreprocess
    trainer_args: dict
    backbone: torch.nn.Module
    store: EmbeddingStore
    fingerprint: dict


def prepare_extraction(spec: ExtractSpec) -> PreparedExtraction:
    """Everything that can be refused (index, preprocessing, Trainer arguments, the weights, an output
    folder that is not vidlab's, holds another extraction or is being written), checked before any
    MLflow run is started; the folder is locked last, and nothing is written into it yet."""
    x = spec.extraction
    index_file = Path(spec.index_file)
    table = load_index(index_file, spec.path_root)
    report = check_index(index_file, spec.path_root, padding_allowed(spec), check_files=True,
                         strict_root=spec.check.strict_root,
                         table=table[COLUMNS])  # the index as read, without the columns load_index added
    refuse_violations(report, f"extract.py stage=validate index={index_file} lists every violation")
    trainer_args = checked_trainer_args({"accelerator": x.accelerator, "devices": x.devices, "strategy": x.strategy,
                                         "precision": x.precision}, "extraction")
    preprocess = _preprocess(spec)
    resize_on_device(preprocess, x.resize_on, "cpu")  # refuses notebook + device before any work
    torch.manual_seed(x.seed)  # random-init weights are the same on every run and rank
    backbone = load_backbone(spec.backbone.name, spec.backbone.weights)
    index_sha = file_sha256(index_file)
    fingerprint = _fingerprint(spec, index_sha, preprocess)
    store = EmbeddingStore(Path(x.output).resolve(), table)
    store.check_claim(fingerprint, x.overwrite)
    if not is_child_rank():  # rank 0 holds it for the whole job
        store.lock()
    return PreparedExtraction(table, index_sha, preprocess, trainer_args, backbone, store, fingerprint)


def extract_embeddings(spec: ExtractSpec, prepared: PreparedExtraction, run_id: str | None = None) -> ExtractionResult:
    """Extract every clip not yet in the output folder (a rerun resumes), then write the manifest."""
    x = spec.extraction
    index_file = Path(spec.index_file)
    table, index_sha, preprocess, store = prepared.table, prepared.index_sha, prepared.preprocess, prepared.store
    folder = store.folder
    dim = backbone_spec(spec.backbone.name).dim
    resumed = store.create_or_resume(prepared.fingerprint, dim, x.overwrite and not is_child_rank())
    on_stop_say(f"what was written is kept in {folder}; rerun the same command to resume")
    done = store.done_rows()
    chunks = [c for c in make_chunks(table, spec.backbone.frames_per_clip, x.batch_size) if not all(done[list(c.rows)])]
    todo = sum(len(c.rows) for c in chunks)
    print(f"{'resuming' if resumed else 'starting'} {folder}: {todo} of {len(table)} clips to extract")
    stream = VideoClipStream(chunks, None, x.colour)
    writer = StoreWriter(store, stream, x.on_error, todo)
    trainer = L.Trainer(**prepared.trainer_args, logger=False, callbacks=[writer, StopOnSignal()],
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    on_device = resize_on_device(preprocess, x.resize_on, trainer.strategy.root_device.type)
    stream.spatial = None if on_device else preprocess.spatial  # None: the readers hand over native-size frames
    stream.readers, stream.decode_apart, stream.decode_threads = reader_plan(x.num_workers, trainer.num_devices)
    loader = clip_loader(stream, trainer.strategy.root_device.type == "cuda")
    if chunks:
        model = EmbeddingExtractor(prepared.backbone, preprocess.normalize, preprocess.spatial if on_device else None,
                                   x.channels_last, x.compile)
        trainer.predict(model, dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier("extraction done")  # every rank's rows are on disk before the manifest
    if not trainer.is_global_zero:
        return ExtractionResult(folder)
    remaining = int((~store.done_rows()).sum())
    if remaining:
        raise RuntimeError(f"{remaining} rows were not extracted; rerun the same command to resume")
    manifest = write_manifest(spec, store, table, index_file, index_sha, preprocess, on_device, dim, writer, run_id)
    metrics = {"clips_per_second": writer.clips_per_second, "rows_written": writer.rows_written,
               "rows_failed": len(manifest.failed_rows), "rows_total": len(table)}
    return ExtractionResult(folder, metrics, [("embeddings", folder / FILE)])


def write_manifest(spec: ExtractSpec, store: EmbeddingStore, table: pd.DataFrame, index_file: Path, index_sha: str,
                   preprocess, on_device: bool, dim: int, writer: StoreWriter, run_id: str | None) -> Manifest:
    failures = {r["row"]: r["reason"] for r in read_jsonl(store.folder / "failures.jsonl")}
    padded = sorted({r["row"] for r in read_jsonl(store.folder / "padded.jsonl")})
    splits = {}
    for split, n in store.counts.items():
        labels = np.load(store.path("labels", split))
        splits[split] = SplitInfo(rows=n, files={kind: store.path(kind, split).name for kind in KINDS},
                                  statistics=store.statistics(split),
                                  label_counts={str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))})
    manifest = Manifest(
        created_at=datetime.now(timezone.utc).isoformat(),
        backbone=f"torchvision/{spec.backbone.name}",
        weights=spec.backbone.weights,
        preprocessing={**preprocess.description, "resize_on": "device" if on_device else "workers"},
        colour={"mode": spec.extraction.colour, "conversion": COLOUR_CONVERSIONS[spec.extraction.colour]},
        frames_per_clip=spec.backbone.frames_per_clip,
        sampling="start + round(linspace(0, max(1, end - start) - 1, frames_per_clip)); "
                 "frames past the video's end repeat its last frame",
        img_size=preprocess.description.get("crop_size") or preprocess.description.get("size"),
        batch_size=spec.extraction.batch_size,
        embedding_dim=dim,
        dtype="float16",
        precision=spec.extraction.precision,
        index=IndexRef(str(index_file.resolve()), index_sha, len(table)),
        splits=splits,
        failed_rows=[{"row": int(r), "split": table.split[r], "path": table.path[r], "reason": reason}
                     for r, reason in sorted(failures.items())],
        padded_rows=padded,
        mlflow_run_id=run_id,
        throughput={"clips_per_second_last_run": writer.clips_per_second, "seconds_last_run": writer.seconds,
                    "startup_seconds_last_run": writer.startup_seconds},
        software={"python": platform.python_version(), "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "lightning": L.__version__, "numpy": np.__version__},
    )
    manifest.write(store.folder)
    return manifest
