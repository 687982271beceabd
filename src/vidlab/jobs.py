"""What every ``train.py`` / ``extract.py`` task starts from: the project root, the run's output
folder, the Lightning Trainer arguments of the config, and a process that can start loader workers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def job_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """``(project root, output folder)``, absolute; the output folder exists."""
    output_dir = Path(cfg.paths.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    return Path(cfg.paths.root).resolve(), output_dir


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The resolved ``trainer`` node, unset (null) arguments left to Lightning's defaults."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return {k: v for k, v in kwargs.items() if v is not None}


def allow_worker_processes() -> None:
    """Let a job started by a Hydra launcher start DataLoader workers, as a job run directly does.

    joblib's default (loky) backend sets the global start method to ``"loky"``, which a spawned or
    forkserver child cannot resolve (and a default-context child fails with ``'Process' object has
    no attribute 'env'``); its ``multiprocessing`` backend runs jobs in daemonic pool processes,
    which may not have children. The job process gets the platform's own start method back and is
    marked non-daemonic; its loader workers still exit with it (PyTorch watches the parent).
    """
    if multiprocessing.get_start_method(allow_none=True) not in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
    current = multiprocessing.current_process()
    if current.daemon:
        current.daemon = False
