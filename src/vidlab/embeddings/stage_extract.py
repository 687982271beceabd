"""``extract.py stage=extract``: the clip embeddings of an index (:mod:`vidlab.embeddings.extraction`
does the work), logged: the index as datasets, the metrics, the manifest, and the embedding files
when they are small enough (else a tag with their folder)."""

from __future__ import annotations

from pathlib import Path

from vidlab import tracking
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.extraction import PreparedExtraction, extract_embeddings, prepare_extraction
from vidlab.embeddings.stage_run import StageRun
from vidlab.tracking.inputs import index_inputs, log_inputs

GROUPS = ("backbone", "extraction")


def written(spec: ExtractSpec, output_dir: Path) -> Path:
    return Path(spec.extraction.output)


def run_name(spec: ExtractSpec) -> str:
    return f"extract-{spec.backbone.name}_T{spec.backbone.frames_per_clip}"


def prepare(spec: ExtractSpec) -> PreparedExtraction:
    """Everything that can be refused, refused; the output folder locked (see :func:`prepare_extraction`)."""
    return prepare_extraction(spec)


def release(prepared: PreparedExtraction) -> None:
    prepared.store.unlock()  # the folder is free once this job ends, also for a caller in the same process


def run(stage: StageRun, prepared: PreparedExtraction) -> int:
    spec, client, run_id = stage.spec, stage.client, stage.run_id
    if client is not None:
        with tracking.best_effort("datasets", client, run_id):
            log_inputs(client, run_id, index_inputs(Path(spec.index_file), prepared.index_sha, prepared.table))
    result = extract_embeddings(spec, prepared, run_id)
    stage.files += result.files
    stage.metrics.update(result.metrics)
    if client is not None:
        tracking.log_artifacts(client, run_id, result.artifacts(spec.extraction.max_artifact_mb, client, run_id))
    stage.finished = True
    return 0
