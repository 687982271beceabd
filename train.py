"""Train and test a restoration model: ``python train.py [group=choice] [key=value] [-m]``."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import vidlab.jobs
import vidlab.train_main

os.environ["VIDLAB_ROOT"] = str(Path(__file__).resolve().parent)  # paths.root: the project, from any cwd


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return vidlab.train_main.main(cfg)


if __name__ == "__main__":
    vidlab.jobs.main(main)  # Hydra's own refusals: one line, exit 2
