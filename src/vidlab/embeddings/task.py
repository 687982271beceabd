"""The tasks behind ``extract.py``, one module a stage: ``stage=index`` (:mod:`~vidlab.embeddings.stage_index`)
builds ``index_clips.csv`` from a video collection, ``stage=validate`` (:mod:`~vidlab.embeddings.stage_validate`)
checks an index made here or elsewhere, ``stage=extract`` (:mod:`~vidlab.embeddings.stage_extract`) writes
clip embeddings. Each logs one MLflow run (:mod:`~vidlab.embeddings.stage_run`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vidlab.embeddings import stage_extract, stage_index, stage_validate
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.stage_run import stage_run
from vidlab.embeddings.store import naming_where_space_ran_out
from vidlab.jobs import job_dirs

STAGES = {"index": stage_index, "validate": stage_validate, "extract": stage_extract}


def run(cfg: DictConfig, spec: ExtractSpec) -> int:
    """Run the stage ``spec`` (``cfg`` checked by :func:`vidlab.embeddings.config.validate_extract`) describes; returns the
    process exit code (non-zero when the index is invalid). What can be refused is refused before a run
    exists; a full disk is one line naming where."""
    stage = STAGES[spec.stage]
    root, output_dir = job_dirs(cfg)
    with naming_where_space_ran_out(Path(stage.written(spec, output_dir))):
        prepared = stage.prepare(spec)
        try:
            with stage_run(cfg, spec, root, output_dir, stage.GROUPS, stage.run_name(spec)) as started:
                return stage.run(started, prepared)
        finally:
            stage.release(prepared)
