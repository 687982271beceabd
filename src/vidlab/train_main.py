"""The tasks ``train.py`` runs, by the config's ``task`` key, each the way every job runs
(:func:`vidlab.jobs.run_job`). A task's config is checked before its module is imported: a config
error is one line in about two seconds, not after Lightning and MLflow have loaded (~12 s)."""

from __future__ import annotations

from importlib import import_module

from omegaconf import DictConfig

import vidlab.help  # noqa: F401 (--help reads the registries)
from vidlab.errors import ConfigError
from vidlab.jobs import run_job

# task -> (module and function that check its config, module whose run(cfg, spec) trains, tests, logs, returns the
# metric)
TASKS = {
    "restoration": ("vidlab.restoration.config", "validate", "vidlab.restoration.task"),
    "probe": ("vidlab.probe.config", "validate_probe", "vidlab.probe.task"),
}


def main(cfg: DictConfig) -> float | None:
    return run_job(_run_task, cfg)


def _run_task(cfg: DictConfig) -> float | None:
    task = cfg.get("task", "restoration")
    if task not in TASKS:
        raise ConfigError(f"task: unknown {task!r} (choose one of {', '.join(TASKS)})")
    config_module, validate, task_module = TASKS[task]
    spec = getattr(import_module(config_module), validate)(cfg)
    return import_module(task_module).run(cfg, spec)
