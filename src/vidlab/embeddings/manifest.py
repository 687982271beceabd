"""``manifest.json``, the one definition of an extraction folder's description: what wrote the
embeddings (backbone, weights, preprocessing, frames per clip), their size and dtype, the index they
came from, and each split's files and rows.

Written by ``extract.py stage=extract`` and by the generators that make extraction folders without a
backbone (:mod:`vidlab.probe.localised`, the tests); read by the probe. :meth:`Manifest.write` writes
it atomically; :meth:`Manifest.read` checks it and upgrades an older format in one place, and any
file it cannot use is one :class:`ManifestError` line naming the file.

Format versions (the ``format_version`` key):

- 1, no ``format_version`` key (vidlab 0.1 and 0.2): 0.1 named the backbone ``encoder`` and the
  frames per clip ``T``; 0.2 named them ``backbone`` and ``frames_per_clip``;
- 2: ``format_version`` written; the keys and values are those of 0.2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from json import JSONDecodeError
from pathlib import Path
from typing import Any, ClassVar

from vidlab.errors import InputError, one_line
from vidlab.files import write_text

VERSION = 2
FILE = "manifest.json"
KINDS = ("embeddings", "labels", "valid")  # the files of a split
RENAMED_IN_V2 = {"backbone": "encoder", "frames_per_clip": "T"}  # key -> its name in the manifests of vidlab 0.1


class ManifestError(InputError):
    """A manifest that is missing, not JSON, not an extraction manifest, or of a newer format."""


class _Wrong(Exception):
    """A key that is missing or has the wrong type (becomes one :class:`ManifestError` line)."""


@dataclass
class IndexRef:
    """The clip index the rows come from (``index_clips.csv``: where each clip lies in its video)."""

    path: str
    sha256: str | None = None
    rows: int | None = None


@dataclass
class SplitInfo:
    """One split: its rows and the file of each kind (``embeddings``, ``labels``, ``valid``) in the folder."""

    rows: int
    files: dict[str, str]
    statistics: dict[str, Any] | None = None    # of the valid rows' values (extraction)
    label_counts: dict[str, int] | None = None  # label -> rows


@dataclass(kw_only=True)
class Manifest:
    """An extraction folder's description; the fields are the file's keys, in its order. A field that
    is ``None`` is left out of the file, except ``weights`` (``None``: random init) and
    ``mlflow_run_id`` (``None``: no MLflow run), which are always written."""

    format_version: int = VERSION
    created_at: str | None = None
    backbone: str                              # "torchvision/<name>", or what made the embeddings
                                               # ("synthetic/localised")
    weights: str | None = None
    preprocessing: dict[str, Any] | None = None
    colour: dict[str, str] | None = None       # YUV->RGB mode and conversion
    frames_per_clip: int | None = None
    sampling: str | None = None
    img_size: Any = None
    batch_size: int | None = None
    embedding_dim: int
    dtype: str
    precision: str | None = None
    index: IndexRef | None = None
    splits: dict[str, SplitInfo]
    failed_rows: list[dict[str, Any]] = field(default_factory=list)
    padded_rows: list[int] = field(default_factory=list)
    mlflow_run_id: str | None = None
    throughput: dict[str, Any] | None = None
    software: dict[str, str] | None = None
    generator: dict[str, Any] | None = None   # the settings of a generator that wrote the folder

    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ("weights", "mlflow_run_id")

    def to_dict(self) -> dict[str, Any]:
        """The file's content, as JSON reads it back."""
        out = asdict(self, dict_factory=_without_none)  # None left out, here and in the index and splits
        return {f.name: out.get(f.name) for f in fields(self) if f.name in out or f.name in self.ALWAYS_WRITTEN}

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/manifest.json`` atomically (whole or not at all); returns its path."""
        return write_text(Path(folder) / FILE, json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """The manifest of ``folder``, checked and upgraded to this format; a missing, unreadable or
        newer file is one :class:`ManifestError` line starting with ``embeddings`` (the setting that
        names the folder)."""
        path = Path(folder) / FILE
        if not path.is_file():
            raise ManifestError(f"embeddings: no {FILE} in {folder} (is the extraction finished?)")
        try:
            raw = json.loads(path.read_text())
        except (JSONDecodeError, UnicodeDecodeError) as err:
            raise ManifestError(f"embeddings: {path} is not valid JSON ({err})") from None
        except OSError as err:
            raise ManifestError(f"embeddings: cannot read {path} ({one_line(err)})") from None
        try:
            return cls.from_dict(upgrade(raw, path))
        except _Wrong as err:
            raise ManifestError(f"embeddings: {path} is not an extraction manifest (missing or wrong {err})") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        """A manifest of this format from its keys (unknown keys are ignored); raises :class:`_Wrong`."""
        splits = _typed(raw, "splits", dict)
        return cls(
            format_version=raw["format_version"],
            created_at=_typed(raw, "created_at", str, None),
            backbone=_typed(raw, "backbone", str),
            weights=_typed(raw, "weights", str, None),
            preprocessing=_typed(raw, "preprocessing", dict, None),
            colour=_typed(raw, "colour", dict, None),
            frames_per_clip=_typed(raw, "frames_per_clip", int, None),
            sampling=_typed(raw, "sampling", str, None),
            img_size=raw.get("img_size"),
            batch_size=_typed(raw, "batch_size", int, None),
            embedding_dim=_typed(raw, "embedding_dim", int),
            dtype=_typed(raw, "dtype", str),
            precision=_typed(raw, "precision", str, None),
            index=_index(raw),
            splits={str(split): _split(info) for split, info in splits.items()},
            failed_rows=_typed(raw, "failed_rows", list, []),
            padded_rows=_typed(raw, "padded_rows", list, []),
            mlflow_run_id=_typed(raw, "mlflow_run_id", str, None),
            throughput=_typed(raw, "throughput", dict, None),
            software=_typed(raw, "software", dict, None),
            generator=_typed(raw, "generator", dict, None),
        )


def upgrade(raw: Any, path: Path) -> dict[str, Any]:
    """The keys of a manifest of any format this vidlab reads, as this format names them: the one
    place older manifests are upgraded. A newer format is a :class:`ManifestError`."""
    if not isinstance(raw, dict):
        raise _Wrong("'format_version'")
    version = raw.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Wrong("'format_version'")
    if version > VERSION:
        raise ManifestError(f"embeddings: {path} is a manifest of format {version}; this vidlab reads formats up to "
                            f"{VERSION} (update vidlab)")
    raw = dict(raw)
    if version == 1:  # 0.1 named two keys differently
        for new, old in RENAMED_IN_V2.items():
            if new not in raw and old in raw:
                raw[new] = raw.pop(old)
    raw["format_version"] = VERSION
    return raw


def _without_none(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {name: value for name, value in items if value is not None}


_MISSING = object()


def _typed(raw: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``raw[name]`` when it is a ``kind`` (``default`` when absent or null, if one is given)."""
    value = raw.get(name)
    if value is None and default is not _MISSING:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Wrong(repr(name))
    return value


def _index(raw: dict[str, Any]) -> IndexRef | None:
    index = _typed(raw, "index", dict, None)
    if index is None:
        return None
    return IndexRef(_typed(index, "path", str), _typed(index, "sha256", str, None), _typed(index, "rows", int, None))


def _split(info: Any) -> SplitInfo:
    if not isinstance(info, dict):
        raise _Wrong("'splits'")
    files = _typed(info, "files", dict)
    for kind in KINDS:
        _typed(files, kind, str)
    return SplitInfo(_typed(info, "rows", int), files, _typed(info, "statistics", dict, None),
                     _typed(info, "label_counts", dict, None))
