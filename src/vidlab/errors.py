"""The failures every entry point turns into one line on stderr, and their exit codes.

Exit codes (the same for ``train.py``, ``extract.py`` and ``python -m vidlab.restore``):
0 done; 1 bad input data (a file, an index, embeddings; or an invalid index with ``stage=validate``);
2 bad config or command line, refused before any work; 128 + N stopped by signal N (130 Ctrl-C,
143 SIGTERM). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno

EXIT_INPUT = 1
EXIT_CONFIG = 2


class ConfigError(ValueError):
    """A config value rejected before any work starts; the message names the key."""


class InputError(ValueError):
    """Input data that cannot be used (a video, an index, embeddings); the message names the file."""


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full file system, a full quota


def no_space_left(err: BaseException) -> str | None:
    """Where a write ran out of space, if that is what ``err`` or an error it arose from is: the
    file system is full or over quota, or SQLite found its disk full. A full disk makes later steps
    fail too (the exception checkpoint, a log line), so the first such error in the chain names it."""
    where, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            where = str(err.filename) if err.filename else where or "the device"  # a failed write() names no file
        elif "database or disk is full" in str(err):
            where = "the MLflow store's disk"
        err = err.__cause__ or err.__context__
    return where


def hydra_error_line(err: BaseException) -> str:
    """One line for Hydra's and OmegaConf's own refusals (an unknown choice, a key not in the config,
    an override that does not parse), which Hydra prints over 6-10 lines: the message and its
    cause's, without OmegaConf's ``full_key``/``object_type`` detail lines; a missing choice lists
    the available ones."""
    from hydra.errors import MissingConfigException

    parts = []
    for part in (err, err.__cause__):
        if part is None:
            continue
        lines = [line.strip() for line in str(part).splitlines() if line.strip()]
        parts.append(" ".join(line for line in lines
                              if not line.startswith(("full_key:", "object_type=", "Available options",
                                                      "Config search path", "provider="))
                              and not (isinstance(part, MissingConfigException) and line in (part.options or []))))
    line = ": ".join(p.rstrip(".") for p in parts if p)
    if isinstance(err, MissingConfigException) and err.options:
        line += f" (choose one of {', '.join(sorted(err.options))})"
    return line
