"""Which config values are MLflow params (what a run varies and compare views plot) and which are tags
(where it ran, what it was called, what it wrote): a compare view whose axes default to
``paths.output_dir`` or ``logger.run_name`` hides the hyper-parameters a user came to compare."""

from __future__ import annotations

from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

BOOKKEEPING_GROUPS = ("paths", "logger", "hydra")
"""Top-level groups that say where and how a run is recorded, never what it computes."""
BOOKKEEPING_KEYS = ("task", "run_name", "ckpt_path", "task_name", "optimized_metric", "optimized_mode", "preview",
                    "stage", "index", "path_root", "embeddings")
"""Top-level keys for names, resuming, sweep targets, display and inputs (inputs are also logged as datasets)."""
LOCATION_NAMES = ("path", "root", "output", "cache_dir", "count_cache", "annotations", "mnist_path", "_target_",
                  "_partial_")
"""Last key segments that name a file, a folder or a Python class: where, not what."""
CONFIG_TAG_PREFIX = "config."


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty dicts are leaves."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_hyperparameter(key: str, value: Any, groups: tuple[str, ...] | None = None) -> bool:
    """A set value that changes what the run computes: not a location, a name or an unset value
    (and, when ``groups`` are given, in one of those top-level groups: what this kind of run reads)."""
    top, last = key.split(".")[0], key.split(".")[-1]
    if top in BOOKKEEPING_GROUPS or top in BOOKKEEPING_KEYS or last in LOCATION_NAMES:
        return False
    if groups is not None and top not in groups:
        return False
    if value is None or value == "???" or value == {}:
        return False
    return not (isinstance(value, str) and (value.startswith("/") or "://" in value))


def split_config(cfg: dict[str, Any], groups: tuple[str, ...] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``(params, tags)`` of a resolved config: hyper-parameters as params, everything else as
    ``config.<key>`` tags (unset values as ``null``, mandatory ones never set are left out)."""
    params, tags = {}, {}
    for key, value in flatten(cfg).items():
        if is_hyperparameter(key, value, groups):
            params[key] = str(value)
        elif value != "???":
            tags[CONFIG_TAG_PREFIX + key] = ("null" if value is None or value == {}
                                             else str(value))[:MAX_TAG_VAL_LENGTH]
    return params, tags


def log_params(client: MlflowClient, run_id: str, cfg: dict[str, Any], groups: tuple[str, ...] | None = None) -> None:
    """Log a resolved config: hyper-parameters as params (whole; a value over MLflow's own limit is
    cut to it and listed in the ``params_truncated`` tag, the full config is also logged as YAML),
    the rest as tags. On a resumed run, params that differ from the first logging go to the
    ``vidlab.resumed_with`` tag (MLflow params never change)."""
    params, tags = split_config(cfg, groups)
    flat = {k: v[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
    too_long = sorted(k for k, v in params.items() if len(v) > MAX_PARAM_VAL_LENGTH)
    logged = client.get_run(run_id).data.params
    changed = sorted(f"{k}={v}" for k, v in flat.items() if k in logged and logged[k] != v)
    if changed:
        tags["vidlab.resumed_with"] = " ".join(changed)[:MAX_TAG_VAL_LENGTH]
    if too_long:
        tags["params_truncated"] = ",".join(too_long)[:MAX_TAG_VAL_LENGTH]
    items = [Param(k, v) for k, v in flat.items() if k not in logged]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    tag_items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(tag_items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=tag_items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
