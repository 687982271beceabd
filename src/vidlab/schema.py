"""What every task's schema uses: range checks, the one-line :class:`ConfigError` for a bad node,
group choices, and the logger and Trainer schemas all three tasks share.

Each group node carries ``name`` (its choice); :func:`build_choice` merges it into the dataclass its
group's registry holds for that choice (wrong type or unknown key fails), then builds the dataclass so
``__post_init__`` checks ranges. Every failure is one :class:`ConfigError` line that names the full key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidlab.errors import ConfigError
from vidlab.registry import Registry, build_node


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def at_least(low: float, cfg: Any, *names: str) -> None:
    """Each named field of ``cfg`` is ``>= low``."""
    for name in names:
        value = getattr(cfg, name)
        require(value >= low, f"{name} must be >= {low} (got {value})")


def one_of(cfg: Any, name: str, *choices: str) -> None:
    """The named field of ``cfg`` is one of ``choices``."""
    value = getattr(cfg, name)
    require(value in choices, f"{name} must be {', '.join(choices[:-1])} or {choices[-1]} (got {value!r})")


def within(low: float, high: float, cfg: Any, *names: str) -> None:
    """Each named field of ``cfg`` is in ``[low, high]``."""
    for name in names:
        value = getattr(cfg, name)
        require(low <= value <= high, f"{name} must be in [{low}, {high}] (got {value})")


SEED_MAX = 2**32 - 1  # NumPy's and Lightning's seeding accept [0, 2**32 - 1]


def seeds(cfg: Any, *names: str) -> None:
    """Each named field of ``cfg`` is a seed NumPy, torch and Lightning accept (a negative one fails
    deep inside them, after the run was made)."""
    within(0, SEED_MAX, cfg, *names)


def check_range(name: str, pair: list[float], low: float, high: float | None = None) -> None:
    require(len(pair) == 2 and pair[0] <= pair[1], f"{name} must be [min, max] with min <= max (got {pair})")
    require(pair[0] >= low, f"{name} must be >= {low} (got {pair})")
    require(high is None or pair[1] <= high, f"{name} must be <= {high} (got {pair})")


@dataclass
class Choice:
    """A group choice: its name (the YAML's file name); the registry of its group (see
    :mod:`vidlab.registry`) knows the class it builds."""

    name: str


@dataclass
class MlflowLoggerConfig(Choice):
    """Every run, metric and artifact logged to an MLflow store (a local SQLite file by default)."""

    tracking_uri: str
    artifact_location: str
    experiment_name: str
    run_name: Optional[str]
    log_checkpoint: bool
    log_model: bool
    register_as: Optional[str]
    system_metrics_interval: Optional[float]
    server_patience: float

    def __post_init__(self) -> None:
        interval = self.system_metrics_interval
        require(interval is None or interval >= 1,
                f"system_metrics_interval must be >= 1 second or null (got {interval})")
        require(self.server_patience >= 1, f"server_patience must be >= 1 second (got {self.server_patience})")
        if self.register_as is not None:
            from mlflow.exceptions import MlflowException
            from mlflow.utils.validation import _validate_model_name

            self.register_as = self.register_as.strip()
            require(self.log_model, f"register_as={self.register_as} needs log_model=true")
            try:
                _validate_model_name(self.register_as)
            except MlflowException as err:
                raise ValueError(f"register_as: {err.message}") from None


@dataclass
class NoLoggerConfig(Choice):
    """Nothing logged to MLflow: outputs stay in the run folder only."""


@dataclass
class TrainerConfig:
    """The Trainer arguments vidlab types (``None``: not set, Lightning's own default), those the shipped
    configs set among them, so checking them needs no Lightning import; any other Lightning Trainer
    argument passes through, checked against Lightning's signature. The values are in ``conf/trainer/``."""

    accelerator: Optional[str] = None
    devices: Any = None
    precision: Any = None
    max_epochs: Optional[int] = None
    max_time: Optional[str] = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    log_every_n_steps: Optional[int] = None
    deterministic: Any = None
    num_sanity_val_steps: Optional[int] = None
    fast_dev_run: Any = None
    overfit_batches: Any = None
    check_val_every_n_epoch: Optional[int] = None
    strategy: Any = None
    sync_batchnorm: Optional[bool] = None

    def __post_init__(self) -> None:
        epochs = self.max_epochs
        require(epochs is None or epochs >= 1 or epochs == -1, f"max_epochs must be >= 1 or -1 (got {epochs})")
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            value = getattr(self, key)
            require(value is None or (isinstance(value, (int, float)) and value >= 0),
                    f"{key} must be a number >= 0 (got {value!r})")


LOGGERS = Registry("logger")  # read by the tasks (vidlab.tracking), not built
LOGGERS.add("mlflow", None, MlflowLoggerConfig)
LOGGERS.add("none", None, NoLoggerConfig)


def _trainer_arguments() -> set[str]:
    import inspect

    import lightning

    return set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}


def resolved(cfg: DictConfig, key: str) -> Any:
    try:
        node = cfg.get(key)
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except OmegaConfBaseException as err:
        where = getattr(err, "full_key", None) or key
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None


# What conf/train.yaml and conf/extract.yaml give every job, and Hydra's own node (in a config composed with it)
ENTRY_KEYS = ("paths", "task", "task_name", "run_name", "hydra")


def refuse_unknown_keys(cfg: DictConfig, known: Iterable[str]) -> None:
    """A top-level key that neither ``known`` (the task's groups and settings) nor :data:`ENTRY_KEYS`
    holds is refused, as Hydra refuses ``modell.depth=3``: with ``+`` (``+modell.depth=3``) Hydra adds
    the typo, which no schema reads, and a whole default run would start."""
    unknown = sorted(set(cfg) - set(ENTRY_KEYS) - set(known))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a group or setting of this config (added with +? check its spelling; "
                          "--help lists the groups)")


def build_choice(cfg: DictConfig, registry: Registry) -> Any:
    """The typed config of the composed group node ``cfg.<group>``, checked by its registered schema."""
    return registry.config(resolved(cfg, registry.group))


def trainer_config(cfg: DictConfig) -> TrainerConfig:
    """The typed ``trainer`` node; an argument Lightning's Trainer does not take is refused."""
    node = resolved(cfg, "trainer") or {}
    others = set(node) - set(TrainerConfig.__dataclass_fields__)  # Lightning is imported only to check these
    unknown = sorted(others - _trainer_arguments()) if others else []
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]}: not an argument of lightning.Trainer")
    return build_node("trainer", TrainerConfig, {k: node[k] for k in node if k in TrainerConfig.__dataclass_fields__})
