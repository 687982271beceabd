"""``extract.py stage=extract``: the clip embeddings of an index (:mod:`vidlab.embeddings.extraction`
does the work), logged: the index as datasets, the metrics, the manifest, and the embedding files
when they are small enough (else a tag with their folder)."""

from __future__ import annotations

from pathlib import Path

from vidlab import tracking
from vidlab.embeddings.extraction import PreparedExtraction, extract_embeddings
from vidlab.embeddings.stage_run import StageRun
from vidlab.tracking.inputs import index_inputs, log_inputs


def run(stage: StageRun, prepared: PreparedExtraction) -> None:
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
