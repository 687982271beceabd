"""``train.py``: the tasks it runs, by the config's ``task`` key, each the way every job runs
(:func:`vidlab.jobs.run_job`)."""

from __future__ import annotations

from importlib import import_module

from omegaconf import DictConfig

from vidlab.errors import ConfigError
from vidlab.jobs import run_job

TASKS = {  # task -> module whose run(cfg) trains, tests, logs and returns the optimized metric
    "restoration": "vidlab.restoration.task",
    "probe": "vidlab.probe.task",
}


def main(cfg: DictConfig) -> float | None:
    return run_job(_run_task, cfg)


def _run_task(cfg: DictConfig) -> float | None:
    task = cfg.get("task", "restoration")
    if task not in TASKS:
        raise ConfigError(f"task: unknown {task!r} (choose one of {', '.join(TASKS)})")
    return import_module(TASKS[task]).run(cfg)
