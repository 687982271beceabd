"""Validate an ``index_clips.csv`` made here or elsewhere, before a long extraction.

Checks the column set and types, that it has clips, clip ranges, ``end_frame > n_frames``, clip
numbering, missing files, duplicate rows, per-video consistency, and videos found in more than one split.
Paths are the user's: an absolute path is read as written (the notebook's index holds absolute paths
and no sidecar); a relative one is read under the video root and may not climb out of it;
``strict_root`` holds absolute paths to the root too, for indexes from elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from vidlab.embeddings.clip_index import COLUMNS
from vidlab.embeddings.config import ExtractSpec
from vidlab.errors import InputError

INT_COLUMNS = ["y", "clip_idx", "start_frame", "end_frame", "clip_len", "stride", "n_frames"]
EXAMPLES = 5


def _common_dir(paths: list[str]) -> str:
    return os.path.commonpath(paths) if paths else ""


def _sidecar(index_file: Path) -> dict:
    """What ``stage=index`` recorded beside the index (``<name>.json``), or nothing for an index made elsewhere."""
    try:
        recorded = json.loads(index_file.with_suffix(".json").read_text())
    except (OSError, ValueError):  # absent, unreadable, not JSON
        return {}
    return recorded if isinstance(recorded, dict) else {}


def video_root(index_file: Path, path_root: str | None) -> str:
    """What the index's relative paths are read under (and, with ``strict_root``, where every video must
    be): ``path_root``, else the root its sidecar JSON records, else the index's own folder."""
    return path_root or _sidecar(index_file).get("root") or str(index_file.parent)


def padding_allowed(spec: ExtractSpec) -> bool:
    """Whether a clip may reach past its video's end (``end_frame > n_frames``: extraction repeats the
    last frame), one rule for every stage, so ``stage=validate`` accepts exactly the indexes
    ``stage=extract`` extracts: as ``check.allow_padded`` says, else as the index was built (its
    sidecar's ``short_videos``: ``pad`` makes such clips), else as ``indexing.short_videos`` says."""
    if spec.check.allow_padded is not None:
        return spec.check.allow_padded
    built = _sidecar(Path(spec.index_file)).get("settings", {}).get("short_videos")
    return (built or spec.indexing.short_videos) == "pad"


def read_index(index_file: Path) -> pd.DataFrame:
    """The index as written (text columns kept as text), or one line saying why it cannot be read."""
    if not index_file.is_file():
        raise InputError(f"index: file not found: {index_file}")
    try:
        return pd.read_csv(index_file, dtype={"path": str, "split": str, "category": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"index: {index_file} is not a readable CSV ({str(err).splitlines()[0]})") from None


def resolve_paths(paths: pd.Series, index_file: Path, path_root: str | None, old_root: str | None = None) -> pd.Series:
    """Absolute file paths for the ``path`` column.

    Relative paths join the root recorded in the index's sidecar JSON, or ``path_root`` when given.
    Absolute paths made on another machine are remapped with ``path_root``: their common folder (or
    ``old_root``) is replaced by it.
    """
    relative = ~paths.map(os.path.isabs)
    out = paths.copy()
    base = video_root(index_file, path_root)
    out[relative] = paths[relative].map(lambda p: os.path.join(base, p))
    if path_root and (~relative).any():
        absolute = paths[~relative]
        old = old_root or _common_dir(list(absolute.unique()))
        if len(absolute.unique()) == 1:
            old = os.path.dirname(old)
        out[~relative] = absolute.map(lambda p: os.path.join(path_root, os.path.relpath(p, old)))
    return out


def _violation(name: str, rows: pd.DataFrame, detail: str) -> dict:
    """``line``: where the first of ``rows`` is in the file (its header is line 1), for a user's editor."""
    return {"check": name, "rows": int(len(rows)), "detail": detail, "line": int(rows.index[0]) + 2,
            "examples": rows.head(EXAMPLES).astype(str).to_dict(orient="records")}


def refuse_violations(report: dict, where_listed: str) -> None:
    """The one line both stages end with on an index with violations (``stage=extract`` before any
    work, ``stage=validate`` after its report): every check that failed, and the first one's rows;
    ``where_listed`` says where every violation is listed."""
    if not report["violations"]:
        return
    first, checks = report["violations"][0], ", ".join(v["check"] for v in report["violations"])
    rows = f"{first['rows']} row(s), the first on line {first['line']}: " if first["rows"] else ""
    raise InputError(f"index: {report['index']} is not valid [{checks}]: {rows}{first['detail']} ({where_listed})")


def _outside_root(paths: pd.Series, resolved: pd.Series, root: str, strict_root: bool) -> tuple[pd.Series, str]:
    """Rows whose file is not under ``root``: relative paths always (``../..`` climbing out of the
    root they are read under is a mistake, not a place), absolute ones only with ``strict_root``."""
    checked = pd.Series(True, index=paths.index) if strict_root else ~paths.map(os.path.isabs)
    outside = checked & resolved.map(lambda p: os.path.commonpath([root, os.path.realpath(p)]) != root)
    if strict_root:
        return outside, f"path leaves the video root {root} (check.strict_root=true)"
    return outside, f"relative path climbs out of the video root {root} (write it absolute to read it as written)"


def _table_violations(table: pd.DataFrame) -> list[dict]:
    """Wrong columns, no clip, or cells that are not numbers: each stops the checks, as the rest would misread."""
    if list(table.columns) != COLUMNS:
        missing = [c for c in COLUMNS if c not in table.columns]
        extra = [c for c in table.columns if c not in COLUMNS]
        return [{"check": "columns", "rows": 0, "examples": [],
                 "detail": f"expected {','.join(COLUMNS)}; missing {missing}, unexpected {extra}, "
                           f"got order {list(table.columns)}"}]
    if table.empty:  # nothing to extract or train on is not a valid index, whatever else holds
        return [{"check": "empty", "rows": 0, "examples": [], "detail": "the index has no clip"}]
    violations = []
    for column in INT_COLUMNS + ["fps"]:
        numeric = pd.to_numeric(table[column], errors="coerce")
        bad = table[numeric.isna() | ((numeric != numeric.round()) if column in INT_COLUMNS else False)]
        if len(bad):
            violations.append(_violation("types", bad,
                                         f"{column} must be {'an integer' if column in INT_COLUMNS else 'a number'}"))
    return violations


def _clip_violations(table: pd.DataFrame, allow_padded: bool) -> list[dict]:
    """Rows wrong on their own: split, label, frame range, clip length, fps, reaching past the video's end."""
    violations = []
    bad_split = table[~table["split"].isin(["train", "val", "test"])]
    if len(bad_split):
        violations.append(_violation("split", bad_split, "split must be train, val or test"))
    bad_y = table[~table["y"].isin([0, 1])]
    if len(bad_y):
        violations.append(_violation("labels", bad_y, "y must be 0 (normal) or 1 (anomalous)"))
    checks = [
        ("invalid_range", (table.start_frame < 0) | (table.end_frame <= table.start_frame),
         "need 0 <= start_frame < end_frame"),
        ("clip_len", table.end_frame - table.start_frame != table.clip_len,
         "end_frame - start_frame must equal clip_len"),
        ("fps", ~(table.fps > 0), "fps must be > 0"),
    ]
    if not allow_padded:
        checks.append(("past_end", table.end_frame > table.n_frames,
                       "end_frame > n_frames: the clip reaches past its video's end (check.allow_padded=true "
                       "extracts it with the video's last frame repeated)"))
    for name, mask, detail in checks:
        if mask.any():
            violations.append(_violation(name, table[mask], detail))
    return violations


def _video_violations(table: pd.DataFrame) -> list[dict]:
    """Rows wrong together: a clip listed twice, a video in two splits, with varying facts, or misnumbered clips."""
    violations = []
    dup = table[table.duplicated(["path", "start_frame", "end_frame"], keep=False)]
    if len(dup):
        violations.append(_violation("duplicates", dup,
                                     "the same clip (path, start_frame, end_frame) appears more than once"))
    per_video = table.groupby("path")
    leaks = per_video["split"].nunique()
    if (leaks > 1).any():
        leaked = table[table.path.isin(leaks[leaks > 1].index)]
        violations.append(_violation("split_leak", leaked, f"{int((leaks > 1).sum())} video(s) in more than one split"))
    for column in ("y", "category", "n_frames", "fps"):
        varying = per_video[column].nunique()
        if (varying > 1).any():
            rows = table[table.path.isin(varying[varying > 1].index)]
            violations.append(_violation("inconsistent_video", rows, f"{column} differs between clips of one video"))
    numbering = per_video["clip_idx"].transform(lambda s: list(range(len(s))) != sorted(s.tolist()))
    if numbering.any():
        violations.append(_violation("clip_idx", table[numbering], "clip_idx must count 0, 1, 2, ... per video"))
    return violations


def _path_violations(table: pd.DataFrame, index_file: Path, path_root: str | None, strict_root: bool,
                     check_files: bool) -> list[dict]:
    """Files outside the video root, and (with ``check_files``) missing or empty files, where extraction reads them."""
    paths = table["path"].fillna("")
    resolved = resolve_paths(paths, index_file, path_root)
    outside, detail = _outside_root(paths, resolved, os.path.realpath(video_root(index_file, path_root)), strict_root)
    violations = [_violation("outside_root", table[outside], detail)] if outside.any() else []
    if check_files:
        violations += _file_violations(table, resolved)
    return violations


def _file_violations(table: pd.DataFrame, resolved: pd.Series) -> list[dict]:
    """Rows whose video file (at its ``resolved`` path) is not found, or is empty; the counts are of files."""
    violations = []
    size = {p: os.path.getsize(p) if os.path.isfile(p) else -1 for p in resolved.unique()}
    missing = table[resolved.map(size) < 0]
    if len(missing):
        violations.append(_violation("missing_files", missing,
                                     f"{int((pd.Series(size) < 0).sum())} video file(s) not found"))
    empty = table[resolved.map(size) == 0]
    if len(empty):
        violations.append(_violation("empty_files", empty,
                                     f"{int((pd.Series(size) == 0).sum())} video file(s) are empty (0 bytes)"))
    return violations


def check_index(index_file: str | Path, path_root: str | None = None, allow_padded: bool = False,
                check_files: bool = True, strict_root: bool = False, table: pd.DataFrame | None = None) -> dict:
    """A report: ``counts`` (per split and class) and ``violations`` (empty when the index is valid).
    The one validation of an index: ``stage=validate`` prints it, ``stage=extract`` refuses to start
    on any violation. ``table``: the index as :func:`read_index` read it, when the caller has it."""
    index_file = Path(index_file)
    table = read_index(index_file) if table is None else table
    report: dict = {"index": str(index_file), "rows": int(len(table)), "violations": []}
    violations = report["violations"]
    violations.extend(_table_violations(table))
    if violations:  # the other checks would misread the table
        return report
    violations.extend(_clip_violations(table, allow_padded))
    violations.extend(_video_violations(table))
    violations.extend(_path_violations(table, index_file, path_root, strict_root, check_files))
    counts = table.groupby(["split", "y"]).agg(clips=("path", "size"), videos=("path", "nunique")).reset_index()
    report["counts"] = counts.to_dict(orient="records")
    report["videos"] = int(table["path"].nunique())
    return report


def format_report(report: dict) -> str:
    lines = [f"index: {report['index']}  ({report['rows']} clips, {report.get('videos', '?')} videos)"]
    if report.get("counts"):
        lines.append(f"{'split':<6} {'y':>2} {'clips':>9} {'videos':>7}")
        for row in report["counts"]:
            lines.append(f"{row['split']:<6} {row['y']:>2} {row['clips']:>9} {row['videos']:>7}")
    if report["violations"]:
        lines.append(f"{len(report['violations'])} violation(s):")
        for v in report["violations"]:
            lines.append(f"  [{v['check']}] {v['rows']} row(s): {v['detail']}")
    else:
        lines.append("valid: no violation")
    return "\n".join(lines)
