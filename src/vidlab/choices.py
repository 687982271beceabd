"""The choices ``conf/`` holds, read without Hydra: where the project's ``conf/`` is, a group's
choices and a choice's values. Code outside a Hydra job (restore, evaluate, ``--help``, the
registries) reads them here; this module imports nothing of vidlab's but its errors, so any may."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vidlab.errors import ConfigError


def project_root() -> Path:
    """The project vidlab runs from: ``VIDLAB_ROOT``, which ``train.py`` and ``extract.py`` set to their
    folder (``paths.root``), else the checkout this package lies in. So a job reads the ``conf/`` that
    Hydra composed it from, even with vidlab installed from another checkout."""
    root = os.environ.get("VIDLAB_ROOT")
    return Path(root) if root else Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """The project's ``conf/``."""
    return project_root() / "conf"


def choice_names(group: str) -> list[str]:
    """The choices ``conf/<group>/`` holds, sorted: a group's registry holds exactly these
    (tests/test_registry.py), and listing them imports none of their classes (``restore --help``)."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def choice_values(group: str, name: str) -> dict[str, Any]:
    """A choice's values from ``conf/<group>/<name>.yaml``, the one place its defaults live, with the
    choices it extends (its defaults list) merged under it: what code outside a Hydra job (restore,
    compared smoothings) builds a choice from."""
    path = conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{group}: unknown choice {name!r} (no {path})")
    node = OmegaConf.load(path)
    # same-group bases
    bases = [base for base in node.pop("defaults", []) if isinstance(base, str) and base != "_self_"]
    return OmegaConf.to_container(OmegaConf.merge(*(choice_values(group, base) for base in bases), node))
