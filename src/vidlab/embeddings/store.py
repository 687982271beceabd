"""The output folder of an extraction, written in place so a killed run can resume.

Per split: ``embeddings_<split>.npy`` (float16 ``[N, D]``, rows in index order), ``labels_<split>.npy``
(int8), ``valid_<split>.npy`` (bool) and ``done_<split>.npy`` (bool, the progress record). A batch
is written data first, flushed, then marked done and flushed again, so a row marked done always has
its data. Failed and padded rows are appended (and fsynced) to ``failures.jsonl`` / ``padded.jsonl``.
``progress.json`` holds the fingerprint of the job, so a rerun only continues the same extraction.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from vidlab.errors import ConfigError
from vidlab.files import write_text
from vidlab.splits import SPLITS

LOCK = ".lock"
# What an extraction writes into its folder, and nothing else: all that overwrite=true may remove.
OWN_FILE = re.compile(r"^((embeddings|labels|valid|done)_(train|val|test)\.npy|progress\.json|manifest\.json|"
                      r"failures\.jsonl|padded\.jsonl|\.lock|\.[\w.]+\.part(\.\w+)?)$")


def _append_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class EmbeddingStore:
    def __init__(self, folder: Path, rows: pd.DataFrame):
        """``rows``: the index with ``row`` (global id), ``split``, ``pos`` (row within its split), ``y``."""
        self.folder = folder
        self.split_of = rows["split"].to_numpy()
        self.pos_of = rows["pos"].to_numpy()
        self.counts = {s: int((rows["split"] == s).sum()) for s in SPLITS if (rows["split"] == s).any()}
        self.labels = {s: rows.loc[rows.split == s, "y"].to_numpy(np.int8) for s in self.counts}
        self._open: dict[str, dict[str, np.memmap]] = {}
        self._lock: TextIO | None = None

    def path(self, kind: str, split: str) -> Path:
        return self.folder / f"{kind}_{split}.npy"

    def lock(self) -> None:
        """Hold an OS lock on the folder until :meth:`unlock` or this process's exit (however it
        exits): a second writer of the same folder is refused, naming the holder, instead of mixing or
        deleting rows."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = (self.folder / LOCK).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"extraction.output: {self.folder} is being written by {holder}; wait for it to end, "
                              "or choose another extraction.output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        handle, self._lock = self._lock, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def foreign_files(self) -> list[str]:
        """Names in the folder that an extraction does not write."""
        return sorted(p.name for p in self.folder.iterdir() if not OWN_FILE.match(p.name)) if self.folder.is_dir() else []

    def create_or_resume(self, fingerprint: dict, dim: int, overwrite: bool, lock: bool = True) -> bool:
        """Lock the folder, then create the files or check they belong to this job; returns True
        when resuming. ``overwrite`` removes only the files an extraction writes, and a folder that
        holds anything else is refused before anything is written into it."""
        progress = self.folder / "progress.json"
        foreign = self.foreign_files()
        if foreign and (overwrite or not progress.exists()):
            raise ConfigError(f"extraction.output: {self.folder} holds files an extraction did not write "
                              f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
        if lock:
            self.lock()
        if overwrite:
            for path in self.folder.iterdir():
                if path.name != LOCK:
                    path.unlink()
        if progress.exists():
            recorded = json.loads(progress.read_text())
            if recorded != fingerprint:
                changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
                raise ConfigError(f"extraction.output: {self.folder} holds another extraction (differs in {', '.join(changed)}); "
                                 "set overwrite=true to start over, or choose another output")
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        for split, n in self.counts.items():
            np.lib.format.open_memmap(self.path("embeddings", split), "w+", np.float16, (n, dim)).flush()
            labels = np.lib.format.open_memmap(self.path("labels", split), "w+", np.int8, (n,))
            labels[:] = self.labels[split]
            labels.flush()
            for kind in ("valid", "done"):
                np.lib.format.open_memmap(self.path(kind, split), "w+", np.bool_, (n,)).flush()
        write_text(progress, json.dumps(fingerprint, indent=2))
        return False

    def _maps(self, split: str) -> dict[str, np.memmap]:
        if split not in self._open:
            self._open[split] = {k: np.load(self.path(k, split), mmap_mode="r+") for k in ("embeddings", "valid", "done")}
        return self._open[split]

    def done_rows(self) -> np.ndarray:
        """Global row ids already written (or failed)."""
        done = np.zeros(len(self.split_of), bool)
        for split in self.counts:
            flags = np.load(self.path("done", split), mmap_mode="r")
            done[self.split_of == split] = flags[self.pos_of[self.split_of == split]]
        return done

    def _by_split(self, rows: np.ndarray):
        for split in np.unique(self.split_of[rows]):
            mask = self.split_of[rows] == split
            yield split, mask, self.pos_of[rows[mask]]

    def write(self, rows: np.ndarray, embeddings: np.ndarray, padded: np.ndarray) -> None:
        if padded.any():
            _append_jsonl(self.folder / "padded.jsonl", [{"row": int(r)} for r in rows[padded]])
        for split, mask, pos in self._by_split(rows):
            maps = self._maps(split)
            maps["embeddings"][pos] = embeddings[mask].astype(np.float16)
            maps["valid"][pos] = True
            maps["embeddings"].flush()
            maps["valid"].flush()
            maps["done"][pos] = True
            maps["done"].flush()

    def fail(self, rows: np.ndarray, reason: str) -> None:
        _append_jsonl(self.folder / "failures.jsonl", [{"row": int(r), "reason": reason} for r in rows])
        for split, _, pos in self._by_split(rows):
            maps = self._maps(split)
            maps["valid"][pos] = False
            maps["valid"].flush()
            maps["done"][pos] = True
            maps["done"].flush()

    def statistics(self, split: str, block: int = 65536) -> dict:
        """Finite statistics over valid rows, accumulated in float64 from float32 blocks."""
        emb = np.load(self.path("embeddings", split), mmap_mode="r")
        valid = np.load(self.path("valid", split), mmap_mode="r")
        total, total_sq, count = 0.0, 0.0, 0
        low, high = np.inf, -np.inf
        for start in range(0, len(emb), block):
            x = np.asarray(emb[start : start + block], dtype=np.float32)[np.asarray(valid[start : start + block])]
            if x.size:
                total += float(x.sum(dtype=np.float64))
                total_sq += float(np.square(x, dtype=np.float64).sum())
                count += x.size
                low, high = min(low, float(x.min())), max(high, float(x.max()))
        if count == 0:
            return {"rows_valid": 0}
        mean = total / count
        return {"rows_valid": int(valid.sum()), "min": low, "max": high, "mean": mean,
                "std": float(np.sqrt(max(total_sq / count - mean**2, 0.0)))}
