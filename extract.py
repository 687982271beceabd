"""Clip-embedding jobs: ``python extract.py stage=index|validate [group=choice] [key=value]``."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import vidlab.extract_main
import vidlab.jobs

os.environ["VIDLAB_ROOT"] = str(Path(__file__).resolve().parent)  # paths.root: the project, from any cwd


@hydra.main(version_base="1.3", config_path="conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    vidlab.extract_main.main(cfg)


if __name__ == "__main__":
    vidlab.jobs.main(main)  # Hydra's own refusals: one line, exit 2
