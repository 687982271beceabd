"""The embeddings a probe reads: an extraction's folder (or its MLflow run), checked against its
manifest, each split's valid rows read from the memmaps in chunks and standardised on train."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.preprocessing import StandardScaler

from vidlab.embeddings.manifest import Manifest
from vidlab.errors import InputError
from vidlab.splits import SPLITS


class ProbeInputError(InputError):
    """The embeddings to probe are missing or inconsistent; the message says which file."""


def resolve_embeddings(reference: str, tracking_uri: str) -> tuple[Path, str | None]:
    """A folder, or the MLflow run id of an extraction (its ``embeddings_dir`` tag)."""
    if Path(reference).is_dir():
        return Path(reference), None
    store = tracking_uri[len("sqlite:///"):] if tracking_uri.startswith("sqlite:///") else None
    # no store made to find nothing
    if not re.fullmatch(r"[0-9a-f]{32}", reference) or (store and not Path(store).is_file()):
        raise ProbeInputError(f"embeddings: {reference!r} is neither a folder nor an MLflow run id in {tracking_uri}")
    try:
        run = MlflowClient(tracking_uri).get_run(reference)
    except Exception:
        raise ProbeInputError(f"embeddings: {reference!r} is neither a folder nor an MLflow run id "
                              f"in {tracking_uri}") from None
    folder = run.data.tags.get("embeddings_dir")
    if not folder or not Path(folder).is_dir():
        raise ProbeInputError(f"embeddings: run {reference} has no embeddings_dir tag pointing to a folder "
                              f"(got {folder!r})")
    return Path(folder), reference


def check_manifest(folder: Path) -> Manifest:
    """The manifest, after checking every split's files against it (shape, dtype, counts)."""
    manifest = Manifest.read(folder)
    for split in SPLITS:
        info = manifest.splits.get(split)
        if info is None:
            raise ProbeInputError(f"embeddings: {folder} has no {split} split")
        emb = _load(folder / info.files["embeddings"])
        expected = (info.rows, manifest.embedding_dim)
        if emb.shape != expected or str(emb.dtype) != manifest.dtype:
            raise ProbeInputError(f"embeddings: {folder / info.files['embeddings']} is {emb.shape} {emb.dtype}, "
                                  f"the manifest says {expected} {manifest.dtype}")
        for kind in ("labels", "valid"):
            arr = _load(folder / info.files[kind])
            if arr.shape != (info.rows,):
                raise ProbeInputError(f"embeddings: {folder / info.files[kind]} has shape {arr.shape}, "
                                      f"expected ({info.rows},)")
    return manifest


def _load(path: Path) -> np.ndarray:
    """A memmapped ``.npy``; a missing or truncated file is a one-line error naming it."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ProbeInputError(f"embeddings: cannot read {path} ({str(err).splitlines()[0]})") from None


CHUNK_ROWS = 16384  # rows read from a memmap at once (48 MiB of float32 at 768 dims): memory stays bounded
CLIP_COLUMNS = ["path", "start_frame", "end_frame", "n_frames"]


@dataclass
class Split:
    """The valid rows of one split, standardised, with the clips they came from."""

    x: np.ndarray               # float32 [n, dim], standardised with the train split's mean and std
    y: np.ndarray               # 0/1 labels (UCF-Crime: the video's label, on each of its clips)
    rows: np.ndarray            # the rows' numbers in the split's files
    invalid: int                # rows the extraction marked invalid, left out
    clips: pd.DataFrame | None  # the index rows of these clips (CLIP_COLUMNS ...); None without an index
    scaler: StandardScaler      # the standardisation fitted on train (the same in every split): a logged probe
                                # applies it

    def videos(self) -> list[np.ndarray]:
        """Positions of each video's clips, in time order (videos in index order)."""
        if self.clips is None:
            raise ProbeInputError("embeddings: the extraction's clip index (manifest index.path) is missing: "
                                  "probe=mil_ranking and probe.annotations need it to group clips into videos")
        codes, _ = pd.factorize(self.clips.path)
        order = np.lexsort((self.clips.start_frame.to_numpy(), codes))
        return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def load_splits(folder: Path, manifest: Manifest) -> dict[str, Split]:
    """Every split's valid rows, checked (labels 0/1 with both classes, finite) and standardised on
    train, read from the memmaps CHUNK_ROWS at a time (no float64 copy of a split is ever made)."""
    raw = {}
    for split in SPLITS:
        files = manifest.splits[split].files
        valid = np.asarray(_load(folder / files["valid"])).astype(bool)
        rows = np.flatnonzero(valid)
        labels = np.asarray(_load(folder / files["labels"]))[rows]
        _check_labels(labels, split, folder)
        raw[split] = (_load(folder / files["embeddings"]), labels.astype(np.int64), rows, int((~valid).sum()))
    scaler = StandardScaler()
    embeddings, _, rows, _ = raw["train"]
    for block in _blocks(embeddings, rows, "train", folder):
        scaler.partial_fit(block)
    index = _index(manifest, folder)
    splits = {}
    for split, (embeddings, labels, rows, invalid) in raw.items():
        x = np.empty((len(rows), embeddings.shape[1]), np.float32)
        for start, block in zip(range(0, len(rows), CHUNK_ROWS), _blocks(embeddings, rows, split, folder)):
            x[start : start + len(block)] = scaler.transform(block)
        clips = None if index is None else _split_clips(index, split, manifest.splits[split].rows, manifest).iloc[rows]
        splits[split] = Split(x, labels, rows, invalid, None if clips is None else clips.reset_index(drop=True), scaler)
    return splits


def _check_labels(labels: np.ndarray, split: str, folder: Path) -> None:
    """Labels in {0, 1} with both classes: a probe on anything else measures nothing."""
    if len(labels) == 0:
        raise ProbeInputError(f"embeddings: no valid row in the {split} split of {folder}")
    if not np.isin(labels, (0, 1)).all():
        raise ProbeInputError(f"embeddings: {split} labels must be 0 or 1, "
                              f"found {sorted(v.item() for v in set(np.unique(labels)) - {0, 1})[:5]} in {folder}")
    if len(np.unique(labels)) < 2:
        raise ProbeInputError(f"embeddings: the {split} split of {folder} has only label {int(labels[0])}: "
                              "ROC-AUC needs both classes")


def _blocks(embeddings: np.ndarray, rows: np.ndarray, split: str, folder: Path) -> Iterator[np.ndarray]:
    """float32 blocks of the given rows; a row that is not finite is a one-line error naming it."""
    for start in range(0, len(rows), CHUNK_ROWS):
        block = np.asarray(embeddings[rows[start : start + CHUNK_ROWS]], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            raise ProbeInputError(f"embeddings: row {rows[start + int(np.flatnonzero(~finite)[0])]} of the {split} "
                                  f"split of {folder} is not finite (NaN or inf)")
        yield block


def _index(manifest: Manifest, folder: Path) -> pd.DataFrame | None:
    """The extraction's clip index (where each row's clip lies in its video), if it is still there."""
    path = Path(manifest.index.path) if manifest.index is not None else None
    if path is None or not path.is_file():
        return None
    try:
        index = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise ProbeInputError(f"embeddings: cannot read the index {path} ({str(err).splitlines()[0]})") from None
    missing = [c for c in ["split", *CLIP_COLUMNS] if c not in index.columns]
    if missing:
        raise ProbeInputError(f"embeddings: the index {path} of {folder} has no column {missing[0]!r}")
    frames = index[CLIP_COLUMNS[1:]].apply(pd.to_numeric, errors="coerce")
    bad = (frames.isna().any(axis=1) | (frames.start_frame < 0) | (frames.end_frame <= frames.start_frame)
           | (frames.start_frame >= frames.n_frames))
    if bad.any():
        row = index.loc[bad.idxmax()]
        raise ProbeInputError(f"embeddings: the index {path} has a clip outside its video (row {int(bad.idxmax()) + 2}"
                              f": start_frame {row.start_frame}, end_frame {row.end_frame}, n_frames {row.n_frames})")
    return index.assign(**frames.astype(np.int64))


def _split_clips(index: pd.DataFrame, split: str, rows: int, manifest: Manifest) -> pd.DataFrame:
    clips = index[index.split == split].reset_index(drop=True)
    if len(clips) != rows:
        raise ProbeInputError(f"embeddings: the index {manifest.index.path} has {len(clips)} {split} clips, "
                              f"the manifest {rows} rows")
    return clips
