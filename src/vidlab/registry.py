"""Registries of the config groups' choices (the way torchvision's ``@register_model`` and timm's
registry work): a choice registers the class that builds it with the schema of its config node,
both in one module, so adding a choice is one YAML in ``conf/<group>/`` and one decorated class.

Checking a config, building the object, ``train.py --help``, the docs' group table and the tests all
read the registries; nothing lists the choices a second time. A group's built-in choices live in the
modules its registry names, imported on the first lookup (so a schema module never imports the
classes, and no import circle forms). A group that keeps one module per choice, named after it
(``"vidlab.probe.{name}"``), imports only the chosen one to check a config: checking a logistic
probe never loads the Lightning probes.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from vidlab.choices import choice_names, choice_values
from vidlab.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One choice of a group: its name, what it builds (a class or builder; ``None`` for a choice the
    task reads rather than builds), its config schema and a one-line summary (its docstring's first)."""

    name: str
    target: Any
    schema: type
    summary: str


def _summary(*objects: Any) -> str:
    """The first sentence of the first of ``objects`` with a docstring."""
    for obj in objects:
        doc = (getattr(obj, "__doc__", None) or "").strip()
        if doc:
            paragraph = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
            return paragraph.split(". ")[0].rstrip(".") + "."
    return ""


def build_node(key: str, schema: type, node: Any) -> Any:
    """Merge ``node`` into ``schema`` and instantiate it; errors become one line naming ``key``."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except MissingMandatoryValue as err:
        where = ".".join(part for part in (key, getattr(err, "full_key", None)) if part)
        raise ConfigError(f"{where}: no value (every default lives in conf/; set it there or on the command "
                          "line)") from None
    except OmegaConfBaseException as err:
        where = ".".join(part for part in (key, getattr(err, "full_key", None)) if part)
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None
    except ConfigError:  # a nested choice's, naming its own key already
        raise
    except ValueError as err:
        raise ConfigError(f"{key}.{err}" if key else str(err)) from None


class Registry:
    """The choices of one config group, by name."""

    def __init__(self, group: str, builtins: tuple[str, ...] | str = (), base: type | None = None):
        """``builtins``: the modules that register the built-in choices; a package, every module of
        which registers some (a new module is found, as timm's ``models`` package is); or one module
        name with ``{name}`` for a group with a module per choice (its choices: the YAMLs of
        ``conf/<group>/``).
        ``base``: the schema every choice's derives from (what the group's task reads of each)."""
        if group in REGISTRIES:
            raise ValueError(f"a registry for group {group!r} exists already")
        self.group, self._builtins, self._loaded, self.base = group, builtins, not builtins, base
        self._entries: dict[str, Entry] = {}
        REGISTRIES[group] = self

    def register(self, name: str, schema: type, summary: str | None = None) -> Callable[[T], T]:
        """Decorator: register the decorated class (or builder) as choice ``name`` with ``schema``."""

        def add(target: T) -> T:
            self.add(name, target, schema, summary)
            return target

        return add

    def add(self, name: str, target: Any, schema: type, summary: str | None = None) -> None:
        """Register ``target`` as choice ``name`` (an object, not a class: a backbone's description)."""
        if not is_dataclass(schema):
            raise TypeError(f"{self.group}.{name}: the schema must be a dataclass (got {schema!r})")
        if self.base is not None and not issubclass(schema, self.base):
            raise TypeError(f"{self.group}.{name}: its schema {schema.__name__} must derive from "
                            f"{self.base.__module__}.{self.base.__name__}, which the {self.group} group's task reads")
        known = self._entries.get(name)
        if known is not None and (known.target is not target or known.schema is not schema):
            raise ValueError(f"{self.group}: choice {name!r} is registered already (by {known.target!r})")
        self._entries[name] = Entry(name, target, schema, summary if summary is not None else _summary(target, schema))
        SCHEMA_GROUPS.setdefault(schema, self)

    def unregister(self, name: str) -> None:
        """Remove choice ``name`` (a test that registered one puts the registry back as it was)."""
        entry = self._entries.pop(name, None)
        if entry is not None and all(e.schema is not entry.schema for e in self._entries.values()):
            SCHEMA_GROUPS.pop(entry.schema, None)

    def _load_builtins(self, name: str | None = None) -> None:
        """Import the modules of the built-in choices: all of them, or only choice ``name``'s when the
        group keeps one module per choice."""
        if self._loaded or (name is not None and name in self._entries):
            return
        if isinstance(self._builtins, str) and "{name}" not in self._builtins:
            package = importlib.import_module(self._builtins)
            for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
                importlib.import_module(module.name)
        elif isinstance(self._builtins, str):
            names = [name] if name is not None else choice_names(self.group)
            for choice in names:
                module = self._builtins.format(name=choice)
                if importlib.util.find_spec(module) is not None:
                    importlib.import_module(module)
            if name is not None:
                return
        else:
            for module in self._builtins:
                importlib.import_module(module)
        self._loaded = True

    def names(self) -> list[str]:
        self._load_builtins()
        return list(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._load_builtins()
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        self._load_builtins(name if isinstance(name, str) else None)
        return name in self._entries

    def __getitem__(self, name: str) -> Entry:
        if name not in self:
            raise ConfigError(f"{self.group}: unknown choice {name!r} (choose one of {', '.join(self.names())})")
        return self._entries[name]

    def config(self, node: Any, key: str | None = None) -> Any:
        """The typed, range-checked config of a node ``{"name": choice, ...}``; one-line
        :class:`ConfigError` naming ``key`` (default: the group) on any bad value."""
        key = key or self.group
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key}: missing (choose one of {', '.join(self.names())})")
        if "name" not in node:
            raise ConfigError(f"{key}.name: missing (choose one of {', '.join(self.names())})")
        if node["name"] not in self:
            raise ConfigError(f"{key}.name: unknown choice {node['name']!r} here "
                              f"(choose one of {', '.join(self.names())}; "
                              f"a new choice's class registers itself with @{self.group.upper()}S.register)")
        return build_node(key, self[node["name"]].schema, node)

    def from_conf(self, name: str, key: str | None = None, **overrides: Any) -> Any:
        """The typed config of choice ``name`` as ``conf/<group>/<name>.yaml`` sets it (its one source
        of defaults), with ``overrides``: what code outside a Hydra job builds a choice from. ``key``
        names it in errors (default: the group)."""
        return self.config({**choice_values(self.group, name), **overrides}, key)

    def build(self, cfg: Any) -> Any:
        """The object a checked config builds: its target called with the config's arguments (see
        :func:`arguments`), a nested choice built by its own registry."""
        return self[cfg.name].target(**arguments(cfg))


REGISTRIES: dict[str, Registry] = {}  # group -> its registry
SCHEMA_GROUPS: dict[type, Registry] = {}  # schema -> the registry of the choices it configures


def arguments(cfg: Any) -> dict[str, Any]:
    """What a choice's config passes to its target: every field except ``name`` and those the schema
    lists in ``SETTINGS`` (read by the task, not by the object), nested choices built."""
    skipped = {"name", *getattr(cfg, "SETTINGS", ())}
    out = {}
    for field in fields(cfg):
        if field.name not in skipped:
            value = getattr(cfg, field.name)
            registry = SCHEMA_GROUPS.get(type(value))
            out[field.name] = registry.build(value) if registry is not None else value
    return out
