"""Atomic file writes: a file appears whole under its name or not at all (a crash, a full disk or a
signal never leaves half a CSV, manifest, video or plot behind); space given to a file when it is made,
and a full disk named where a write could not say; JSON-lines logs appended durably."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidlab.errors import NO_SPACE


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process; the suffix is kept because writers
    (OpenCV, Pillow, matplotlib, pandas) choose the format from it."""
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


TEMPORARY = re.compile(r"^\.[^/]+\.(?P<pid>\d+)\.part(\.[^./]+)?$")  # :func:`temporary_sibling`'s names


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # sends nothing: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it does, as another user's
        pass
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove what a vidlab process killed mid-write (``kill -9``, the OOM killer) left in ``folder``
    under :func:`temporary_sibling`'s name: a file no process will finish. Only such names, and only
    when the process that wrote it is gone; returns what was removed."""
    stale = [p for p in folder.iterdir() if (match := TEMPORARY.match(p.name)) and p.is_file()
             and not _running(int(match["pid"]))] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write to the yielded temporary path; it becomes ``path`` when the block ends without error and
    is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path.write_text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def naming_where_space_ran_out(where: Path) -> Iterator[None]:
    """A full disk or quota met by a write that names no file (``write``, ``msync``, ``fallocate``)
    is told as being on ``where``: :func:`vidlab.jobs.run_job` makes it the one line "no space left on
    <path>" (exit 1, the run FAILED), and what was written stays for the same command to resume."""
    try:
        yield
    except OSError as err:
        if err.errno in NO_SPACE and not err.filename:
            err.filename = str(where)
        raise


def allocate(path: Path) -> None:
    """Give the file its blocks now: rows written through a memory map into a sparse file on a full
    disk kill the process with SIGBUS; here the disk's refusal is an ``OSError`` (ENOSPC)."""
    with path.open("r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Records appended as JSON lines, flushed and fsynced: a log that a crash never loses a written line of."""
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
