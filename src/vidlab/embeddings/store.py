"""The output folder of an extraction, written in place so a killed run can resume.

Per split: ``embeddings_<split>.npy`` (float16 ``[N, D]``, rows in index order), ``labels_<split>.npy``
(int8), ``valid_<split>.npy`` (bool) and ``done_<split>.npy`` (bool: the rows written). A batch
is written data first, flushed, then marked done and flushed again, so a row marked done always has
its data. Failed and padded rows are appended (and fsynced) to ``failures.jsonl`` / ``padded.jsonl``.

``progress.json`` is vidlab's claim on the folder, written before anything else: marked as vidlab's
and holding the fingerprint of the job, so a rerun only continues the same extraction. A folder
without it is never vidlab's, whatever its files are named: one that holds anything (but what a
start cut short left) is refused, and ``overwrite`` removes only what an extraction writes, from a
folder that holds the claim.
Data files are made whole under a temporary name with their space allocated (``posix_fallocate``),
so a full disk is an ``OSError`` when the file is made, never a SIGBUS when a row is written.
"""

from __future__ import annotations

import contextlib
import errno
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
from vidlab.files import allocate, append_jsonl, atomic_path, remove_stale_temporaries, write_text
from vidlab.splits import SPLITS

LOCK = ".lock"
PROGRESS = "progress.json"
WRITTEN_BY = "vidlab clip-embedding extraction"  # in progress.json: the mark that makes a folder vidlab's
# What an extraction writes into a folder it claimed, and nothing else: all that overwrite=true may remove.
OWN_FILE = re.compile(r"^((embeddings|labels|valid|done)_(train|val|test)\.npy|progress\.json|manifest\.json|"
                      r"failures\.jsonl|padded\.jsonl|\.lock|\.[\w.]+\.part(\.\w+)?)$")
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)  # a path that cannot be written: a config error
# What a start cut short before the claim leaves in a folder: vidlab's lock line, a half-written claim.
LOCK_LINE = re.compile(r"(pid \d+ on \S+\n?)?")
CLAIM_PART = re.compile(r"^\.progress\.\d+\.part\.json$")


def read_claim(folder: Path) -> dict | None:
    """The fingerprint in the folder's ``progress.json`` when vidlab wrote it (its mark), else None."""
    try:
        record = json.loads((folder / PROGRESS).read_text())
    except (OSError, ValueError):  # absent, unreadable, not JSON: not vidlab's record
        return None
    if (isinstance(record, dict) and record.get("written_by") == WRITTEN_BY
            and isinstance(record.get("fingerprint"), dict)):
        return record["fingerprint"]
    if isinstance(record, dict) and {"index_sha256", "backbone", "preprocess", "weights_sha256"} <= record.keys():
        return record  # vidlab 0.2 wrote the bare fingerprint: its extractions still resume
    return None


def _is_trace(path: Path) -> bool:
    """Left by a vidlab start cut short before it claimed the folder (a full disk, a signal)."""
    if CLAIM_PART.match(path.name):
        return True
    if path.name != LOCK or not path.is_file() or path.stat().st_size > 4096:
        return False
    return LOCK_LINE.fullmatch(path.read_text(errors="replace")) is not None


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
        self._made: list[Path] = []  # the folders lock() created, innermost first

    def path(self, kind: str, split: str) -> Path:
        return self.folder / f"{kind}_{split}.npy"

    def lock(self) -> None:
        """Hold an OS lock on the folder until :meth:`unlock` or this process's exit (however it
        exits): a second writer of the same folder is refused, naming the holder, instead of mixing or
        deleting rows. Taken after :meth:`check_claim`: a ``.lock`` that is not vidlab's is not opened.
        A folder that cannot be written (a read-only file system, no permission) is a bad path."""
        self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = (self.folder / LOCK).open("a+")
        except OSError as err:
            if err.errno not in UNWRITABLE:
                raise
            self._remove_made()
            raise ConfigError(f"extraction.output: cannot write {self.folder} ({err.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"extraction.output: {self.folder} is being written by {holder}; wait for it to end, "
                              "or choose another extraction.output") from None
        self._lock = handle
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
        except OSError:  # a full disk: no caller holds this store yet to unlock it
            self.unlock()
            raise

    def unlock(self) -> None:
        """Release the lock; a job that ended before it claimed the folder (the MLflow store refused,
        a signal) takes back what :meth:`lock` made: its ``.lock``, and the folders it created."""
        handle, self._lock = self._lock, None
        if handle is None:
            return
        if read_claim(self.folder) is None:
            (self.folder / LOCK).unlink(missing_ok=True)
            self._remove_made()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    def _remove_made(self) -> None:
        for folder in self._made:  # innermost first; one that holds anything now stays
            with contextlib.suppress(OSError):
                folder.rmdir()

    def check_claim(self, fingerprint: dict, overwrite: bool) -> bool:
        """Whether the folder holds vidlab's claim; refuses, before anything is written, a folder that
        holds anything without one (whatever the names: a user's ``manifest.json`` is theirs), and one
        claimed by another extraction unless ``overwrite``."""
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"extraction.output: {self.folder} is a file, not a folder")
        recorded = read_claim(self.folder)
        if recorded is None:
            foreign = sorted(p.name for p in self.folder.iterdir() if not _is_trace(p)) if self.folder.is_dir() else []
            if foreign:
                raise ConfigError(f"extraction.output: {self.folder} holds files an extraction did not write "
                                  f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                                  "choose a new or empty folder")
            return False
        if recorded != fingerprint and not overwrite:
            changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
            raise ConfigError(f"extraction.output: {self.folder} holds another extraction (differs in "
                              f"{', '.join(changed)}); set overwrite=true to start over, or choose another output")
        return True

    def create_or_resume(self, fingerprint: dict, dim: int, overwrite: bool) -> bool:
        """Under the lock: claim the folder and make the files, or check they belong to this job;
        returns True when resuming. ``overwrite`` removes only what an extraction writes (files that
        are not its stay). A split's files missing (a start cut short) are made, none of them done."""
        claimed = self.check_claim(fingerprint, overwrite)  # again: the folder may have changed before the lock
        remove_stale_temporaries(self.folder)  # a data file a killed start left half-made (a resume makes it again)
        # done flags first, the claim kept until replaced: a stop midway leaves a folder that resumes
        if claimed and overwrite:
            for path in sorted(self.folder.iterdir(), key=lambda p: not p.name.startswith("done_")):
                if OWN_FILE.match(path.name) and path.name not in (LOCK, PROGRESS):
                    path.unlink()
        resumed = claimed and not overwrite
        if not resumed:
            write_text(self.folder / PROGRESS,
                       json.dumps({"written_by": WRITTEN_BY, "fingerprint": fingerprint}, indent=2))
        for split, n in self.counts.items():
            if not self.path("done", split).exists():  # made last: a split without it has no row done
                self._make(self.path("embeddings", split), np.float16, (n, dim))
                self._make(self.path("labels", split), np.int8, (n,), self.labels[split])
                self._make(self.path("valid", split), np.bool_, (n,))
                self._make(self.path("done", split), np.bool_, (n,))
            for kind in ("embeddings", "valid", "done"):
                allocate(self.path(kind, split))  # a folder copied sparse (rsync -S, cp --sparse) gets its space back
        return resumed

    @staticmethod
    def _make(path: Path, dtype: type, shape: tuple[int, ...], values: np.ndarray | None = None) -> None:
        """A zero-filled ``.npy`` with its space allocated, whole under its name or absent."""
        with atomic_path(path) as tmp:
            array = np.lib.format.open_memmap(tmp, "w+", dtype, shape)
            allocate(tmp)
            if values is not None:
                array[:] = values
            array.flush()
            del array

    def _maps(self, split: str) -> dict[str, np.memmap]:
        if split not in self._open:
            self._open[split] = {k: np.load(self.path(k, split), mmap_mode="r+")
                                 for k in ("embeddings", "valid", "done")}
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
            append_jsonl(self.folder / "padded.jsonl", [{"row": int(r)} for r in rows[padded]])
        for split, mask, pos in self._by_split(rows):
            maps = self._maps(split)
            maps["embeddings"][pos] = embeddings[mask].astype(np.float16)
            maps["valid"][pos] = True
            maps["embeddings"].flush()
            maps["valid"].flush()
            maps["done"][pos] = True
            maps["done"].flush()

    def fail(self, rows: np.ndarray, reason: str) -> None:
        append_jsonl(self.folder / "failures.jsonl", [{"row": int(r), "reason": reason} for r in rows])
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
