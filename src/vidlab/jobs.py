"""What every ``train.py`` / ``extract.py`` task starts from: the project root, the run's output
folder, and the Lightning Trainer arguments of the config."""

from __future__ import annotations

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
