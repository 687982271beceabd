"""``train.py --help`` and ``extract.py --help``: every config group with its choices. A registered
group's choices come from its registry (:mod:`vidlab.registry`), each with what it is; the other
groups are presets (YAML files that set other groups' values), listed from ``conf/``."""

from __future__ import annotations

from importlib import import_module

from omegaconf import OmegaConf

from vidlab.choices import conf_dir
from vidlab.registry import REGISTRIES, Registry

# they define every registry
TASK_CONFIGS = ("vidlab.restoration.config", "vidlab.probe.config", "vidlab.embeddings.config")


def registries() -> list[Registry]:
    """Every group's registry, by group name."""
    for module in TASK_CONFIGS:
        import_module(module)
    return [REGISTRIES[group] for group in sorted(REGISTRIES)]


def choices_text() -> str:
    """``group: a, b, c`` per registered group, then one line per choice saying what it is."""
    lines = []
    for registry in registries():
        lines.append(f"{registry.group}: {', '.join(registry.names())}")
        lines += [f"    {entry.name:<16}{entry.summary}".rstrip() for entry in registry.entries()]
    return "\n".join(lines)


def presets_text() -> str:
    """``group: a, b`` for the groups of ``conf/`` that no registry holds."""
    registered = {registry.group for registry in registries()}
    groups = sorted(p for p in conf_dir().iterdir() if p.is_dir() and p.name not in registered and p.name != "hydra")
    return "\n".join(f"{group.name}: {', '.join(sorted(f.stem for f in group.glob('*.yaml')))}" for group in groups)


OmegaConf.register_new_resolver("vidlab.choices", choices_text, replace=True)
OmegaConf.register_new_resolver("vidlab.presets", presets_text, replace=True)
