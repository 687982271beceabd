"""Atomic file writes: a file appears whole under its name or not at all (a crash, a full disk or a
signal never leaves half a CSV, manifest, video or plot behind)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process; the suffix is kept because writers
    (OpenCV, Pillow, matplotlib, pandas) choose the format from it."""
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


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
