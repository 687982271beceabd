"""The tasks behind ``extract.py``, one module a stage: ``stage=index`` (:mod:`~vidlab.embeddings.stage_index`)
builds ``index_clips.csv`` from a video collection, ``stage=validate`` (:mod:`~vidlab.embeddings.stage_validate`)
checks an index made here or elsewhere, ``stage=extract`` (:mod:`~vidlab.embeddings.stage_extract`) writes
clip embeddings. Each logs one MLflow run (:mod:`~vidlab.embeddings.stage_run`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vidlab.embeddings import stage_extract, stage_index, stage_validate
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.extraction import prepare_extraction
from vidlab.embeddings.stage_run import StageRun, stage_run
from vidlab.files import naming_where_space_ran_out
from vidlab.jobs import job_dirs


@dataclass(frozen=True)
class Stage:
    """One stage: ``groups``, the config groups whose values are its run's params (the rest of the
    config is in its tags); ``written(spec, output_dir)``, where it writes (a full disk names it);
    ``run_name(spec)``, its run's name unless ``logger.run_name`` gives one; ``run(stage_run, prepared)``,
    the work; ``prepare(spec)``, whatever can be refused, refused before the run exists (what it returns
    is ``run``'s ``prepared``); ``release(prepared)``, called however the stage ended."""

    groups: tuple[str, ...]
    written: Callable[[ExtractSpec, Path], str | Path]
    run_name: Callable[[ExtractSpec], str]
    run: Callable[[StageRun, Any], None]
    prepare: Callable[[ExtractSpec], Any] = lambda spec: None
    release: Callable[[Any], None] = lambda prepared: None


STAGES = {
    "index": Stage(("layout", "indexing", "check"), lambda spec, output_dir: spec.indexing.output,
                   lambda spec: f"index-{spec.layout.name}", stage_index.run, prepare=stage_index.prepare),
    "validate": Stage(("check",), lambda spec, output_dir: output_dir,
                      lambda spec: f"validate-{Path(spec.index_file).stem}", stage_validate.run),
    "extract": Stage(("backbone", "extraction"), lambda spec, output_dir: spec.extraction.output,
                     lambda spec: f"extract-{spec.backbone.name}_T{spec.backbone.frames_per_clip}", stage_extract.run,
                     # the output folder locked: free once this job ends, also for a caller in this process
                     prepare=prepare_extraction,
                     release=lambda prepared: prepared.store.unlock()),
}


def run(cfg: DictConfig, spec: ExtractSpec) -> None:
    """Run the stage ``spec`` (``cfg`` checked by :func:`vidlab.embeddings.config.validate_extract`) describes.
    What can be refused is refused before a run exists; a full disk is one line naming where."""
    stage = STAGES[spec.stage]
    root, output_dir = job_dirs(cfg)
    with naming_where_space_ran_out(Path(stage.written(spec, output_dir))):
        prepared = stage.prepare(spec)
        try:
            with stage_run(cfg, spec, root, output_dir, stage.groups, stage.run_name(spec)) as started:
                stage.run(started, prepared)
        finally:
            stage.release(prepared)
