"""The embeddings a probe reads: an extraction's folder (or its MLflow run), checked against its
manifest, and each split's valid rows read from the memmaps on access (never loaded whole)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import Dataset

from vidlab.errors import InputError
from vidlab.splits import SPLITS

RENAMED_KEYS = {"backbone": "encoder", "frames_per_clip": "T"}  # manifest key -> its name before 0.2 (read until 0.3)


class ProbeInputError(InputError):
    """The embeddings to probe are missing or inconsistent; the message says which file."""


def resolve_embeddings(reference: str, tracking_uri: str) -> tuple[Path, str | None]:
    """A folder, or the MLflow run id of an extraction (its ``embeddings_dir`` tag)."""
    if Path(reference).is_dir():
        return Path(reference), None
    try:
        run = MlflowClient(tracking_uri).get_run(reference)
    except Exception:
        raise ProbeInputError(f"embeddings: {reference!r} is neither a folder nor an MLflow run id in {tracking_uri}") from None
    folder = run.data.tags.get("embeddings_dir")
    if not folder or not Path(folder).is_dir():
        raise ProbeInputError(f"embeddings: run {reference} has no embeddings_dir tag pointing to a folder (got {folder!r})")
    return Path(folder), reference


def check_manifest(folder: Path) -> dict:
    """The manifest, after checking every split's files against it (shape, dtype, counts)."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise ProbeInputError(f"embeddings: no manifest.json in {folder} (is the extraction finished?)")
    try:
        manifest = json.loads(path.read_text())
        for new, old in RENAMED_KEYS.items():  # manifests written before the rename are read as they were
            if new not in manifest and old in manifest:
                manifest[new] = manifest[old]
        for key in ("splits", "embedding_dim", "dtype", "backbone"):
            manifest[key]  # noqa: B018 - a KeyError names the missing key
        for split in SPLITS:
            info = manifest["splits"].get(split)
            if info is None:
                raise ProbeInputError(f"embeddings: {folder} has no {split} split")
            emb = _load(folder / info["files"]["embeddings"])
            expected = (info["rows"], manifest["embedding_dim"])
            if emb.shape != expected or str(emb.dtype) != manifest["dtype"]:
                raise ProbeInputError(f"embeddings: {folder / info['files']['embeddings']} is {emb.shape} {emb.dtype}, "
                                      f"the manifest says {expected} {manifest['dtype']}")
            for kind in ("labels", "valid"):
                arr = _load(folder / info["files"][kind])
                if arr.shape != (info["rows"],):
                    raise ProbeInputError(f"embeddings: {folder / info['files'][kind]} has shape {arr.shape}, expected ({info['rows']},)")
    except json.JSONDecodeError as err:
        raise ProbeInputError(f"embeddings: {path} is not valid JSON ({err})") from None
    except (KeyError, TypeError) as err:
        raise ProbeInputError(f"embeddings: {path} is not an extraction manifest (missing or wrong {err})") from None
    return manifest


def _load(path: Path) -> np.ndarray:
    """A memmapped ``.npy``; a missing or truncated file is a one-line error naming it."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ProbeInputError(f"embeddings: cannot read {path} ({str(err).splitlines()[0]})") from None


def check_rows(rows: EmbeddingRows, split: str, folder: Path) -> None:
    """Labels in {0, 1}, finite embeddings, both classes: a probe on anything else measures nothing."""
    labels = np.asarray(rows.labels)[rows.rows]
    if len(rows) == 0:
        raise ProbeInputError(f"embeddings: no valid row in the {split} split of {folder}")
    if not np.isin(labels, (0, 1)).all():
        raise ProbeInputError(f"embeddings: {split} labels must be 0 or 1, found {sorted(int(v) for v in set(np.unique(labels)) - {0, 1})[:5]} in {folder}")
    if len(np.unique(labels)) < 2:
        raise ProbeInputError(f"embeddings: the {split} split of {folder} has only label {int(labels[0])}: ROC-AUC needs both classes")
    for start in range(0, len(rows.rows), 65536):
        block = np.asarray(rows.embeddings[rows.rows[start : start + 65536]], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = rows.rows[start + int(np.nonzero(~np.isfinite(block).all(axis=1))[0][0])]
            raise ProbeInputError(f"embeddings: row {bad} of the {split} split of {folder} is not finite (NaN or inf)")


class EmbeddingRows(Dataset):
    """The valid rows of one split, read from the memmap on access."""

    def __init__(self, folder: Path, manifest: dict, split: str):
        files = manifest["splits"][split]["files"]
        self.embeddings = np.load(folder / files["embeddings"], mmap_mode="r")
        self.labels = np.load(folder / files["labels"], mmap_mode="r")
        valid = np.load(folder / files["valid"])
        self.rows = np.nonzero(valid)[0]
        self.invalid = int((~valid).sum())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        return torch.from_numpy(np.asarray(self.embeddings[row], dtype=np.float32)), torch.tensor(float(self.labels[row]))
