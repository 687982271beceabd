"""The clip-embedding stages ``extract.py`` runs (``stage=index|validate|extract``), run the way every job
runs (:func:`vidlab.jobs.run_job`). The config is checked before the stages' module is imported: a
config error is one line in about a second, not after torch, Lightning and MLflow have loaded."""

from __future__ import annotations

from importlib import import_module

from omegaconf import DictConfig

import vidlab.help  # noqa: F401 (--help reads the registries)
from vidlab.embeddings.config import validate_extract
from vidlab.jobs import run_job


def main(cfg: DictConfig) -> None:
    run_job(_run_stage, cfg)


def _run_stage(cfg: DictConfig) -> None:
    spec = validate_extract(cfg)  # before the stages' module (torch, Lightning, MLflow) is imported
    return import_module("vidlab.embeddings.task").run(cfg, spec)
