"""The MLflow run of one ``extract.py`` stage (:mod:`~vidlab.embeddings.stage_index`,
:mod:`~vidlab.embeddings.stage_validate`, :mod:`~vidlab.embeddings.stage_extract`): started once the
stage's inputs were accepted, and, however the stage ends, given what it measured and wrote (what a
stage is: :class:`vidlab.embeddings.task.Stage`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vidlab import tracking
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.extraction import is_child_rank
from vidlab.schema import MlflowLoggerConfig


@dataclass
class StageRun:
    """A running stage: its spec, output folder and MLflow run (``client`` None without one), and what
    the run logs when the stage ends: ``metrics``, ``files`` (artifact folder, path), and the status
    ``FINISHED`` once the stage sets ``finished`` (a failure's end status is set by ``run_job``)."""

    spec: ExtractSpec
    output_dir: Path
    client: MlflowClient | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)
    finished: bool = False


@contextmanager
def stage_run(cfg: DictConfig, spec: ExtractSpec, root: Path, output_dir: Path, groups: tuple[str, ...],
              name: str) -> Iterator[StageRun]:
    """The stage's run (none with ``logger=none`` or on a DDP rank > 0), named ``logger.run_name`` or
    ``name``, its params the values of ``groups``; what was done is logged either way."""
    run = StageRun(spec, output_dir)
    if isinstance(spec.logger, MlflowLoggerConfig) and not is_child_rank():
        run.client, run.run_id = tracking.start_run(replace(spec.logger, run_name=spec.logger.run_name or name), root,
                                                    output_dir, {"task": "embeddings", "stage": spec.stage})
        tracking.log_config(run.client, run.run_id, cfg, output_dir, groups)
    try:
        yield run
    finally:
        if run.client is not None:
            for key, value in run.metrics.items():
                run.client.log_metric(run.run_id, key, float(value))
            tracking.log_artifacts(run.client, run.run_id,
                                   [(folder, path) for folder, path in run.files if path.exists()])
            if run.finished:
                run.client.set_terminated(run.run_id, "FINISHED")
