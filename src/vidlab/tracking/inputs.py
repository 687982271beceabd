"""What a run read, as MLflow datasets (the run's Dataset column, one per split with its context):
the videos of each restoration split, the clip index of an extraction, the embeddings of a probe.

Each is a :class:`~mlflow.data.meta_dataset.MetaDataset`: its source is the local file or folder and
its digest a fingerprint of what was read (file names and sizes, or the file's sha256), so two runs
that read the same data show the same digest without MLflow copying a byte of it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient

CONTEXT_TAG = "mlflow.data.context"  # what the UI shows as the dataset's context (train, val, test)


def content_digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dataset_input(name: str, location: Path, digest: str, context: str, tags: dict[str, object]) -> DatasetInput:
    """A dataset read from ``location`` in ``context``, with descriptive input tags."""
    dataset = MetaDataset(LocalArtifactDatasetSource(location.resolve().as_uri()), name=name, digest=digest)
    input_tags = [InputTag(CONTEXT_TAG, context)] + [InputTag(str(k), str(v)[:500]) for k, v in tags.items()]
    return DatasetInput(dataset._to_mlflow_entity(), input_tags)


def video_split_inputs(name: str, videos_by_split: dict[str, list[str]],
                       settings: dict[str, object]) -> list[DatasetInput]:
    """One dataset per split of video files: source their common folder, digest their names and sizes
    (and the generator ``settings`` that made them, if any)."""
    inputs = []
    for split, videos in videos_by_split.items():
        if not videos:
            continue
        paths = sorted({Path(v).resolve() for v in videos})
        folder = Path(os.path.commonpath([p.parent for p in paths]))
        files = [(str(p.relative_to(folder)), p.stat().st_size) for p in paths]
        tags = {"videos": len(paths), **{f"settings.{k}": v for k, v in settings.items()}}
        inputs.append(dataset_input(name, folder, content_digest(files, settings), split, tags))
    return inputs


def index_inputs(index_file: Path, sha256: str, table: pd.DataFrame) -> list[DatasetInput]:
    """The clip index an extraction read, one dataset per split (its rows), digest from the file's sha256."""
    inputs = []
    for split, rows in table.groupby("split", sort=False):
        tags = {"sha256": sha256, "clips": len(rows), "videos": rows["path"].nunique()}
        inputs.append(dataset_input(index_file.name, index_file, content_digest(sha256, split), str(split), tags))
    return inputs


def log_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
