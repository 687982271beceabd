"""Clip-embedding jobs: ``python extract.py stage=index|validate [group=choice] [key=value]``."""

import hydra
from omegaconf import DictConfig

import vidlab.extract


@hydra.main(version_base="1.3", config_path="conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    vidlab.extract.main(cfg)


if __name__ == "__main__":
    main()
