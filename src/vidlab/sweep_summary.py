"""A finished sweep's summary: each job's best value of the optimized metric over its history, and
``sweep_summary.csv`` with a plot of that value against each swept parameter (logged on the sweep's
parent run by :mod:`vidlab.sweeps`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def best_values(client: MlflowClient, children: list[Run], metric: str, mode: str) -> dict[str, float]:
    """Each child's best ``metric`` over its history (what its checkpoint kept and the sweeper got), by run id."""
    best = {}
    for run in children:
        if metric not in run.data.metrics:
            continue
        values = [m.value for m in client.get_metric_history(run.info.run_id, metric) if math.isfinite(m.value)]
        if values:
            best[run.info.run_id] = max(values) if mode == "max" else min(values)
    return best


def write_sweep_summary(children: list[Run], metric: str, folder: Path, best: dict[str, float]) -> list[Path]:
    """``sweep_summary.csv`` (each job's overrides, status, best ``metric`` and final metrics) and
    ``sweep_<metric>.png`` (the best metric against each swept parameter)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    column = f"best/{metric}"
    rows = []
    for run in children:
        overrides = dict(o.split("=", 1) for o in run.data.tags.get("hydra_overrides", "").split() if "=" in o)
        rows.append({"run_id": run.info.run_id, "run_name": run.info.run_name,
                     "job": run.data.tags.get("hydra_job_num"),
                     "status": run.info.status, **{f"override.{k}": v for k, v in overrides.items()},
                     **({column: best.get(run.info.run_id, math.nan)} if metric else {}), **run.data.metrics})
    table = (pd.DataFrame(rows).sort_values("job", key=lambda s: pd.to_numeric(s, errors="coerce")) if rows
             else pd.DataFrame())
    csv = folder / "sweep_summary.csv"
    table.to_csv(csv, index=False)
    files = [csv]
    swept = [c for c in table.columns if c.startswith("override.") and table[c].nunique() > 1]
    if best and swept:
        fig, axes = plt.subplots(1, len(swept), figsize=(4.5 * len(swept), 3.8), squeeze=False)
        for ax, name in zip(axes[0], swept):
            x = pd.to_numeric(table[name], errors="coerce")
            ax.plot(x if x.notna().all() else table[name].astype(str), table[column], "o")
            ax.set(xlabel=name.removeprefix("override."), ylabel=column)
        fig.tight_layout()
        png = folder / f"sweep_{metric.replace('/', '_')}.png"
        fig.savefig(png, dpi=100)
        plt.close(fig)
        files.append(png)
    return files


def log_sweep_summary(client: MlflowClient, parent: str, children: list[Run], metric: str, mode: str,
                      folder: Path) -> None:
    """On the sweep's parent run: the summary and plot, Optuna's ``optimization_results.yaml`` when
    there is one, and the best child (``best/<metric>``, tags ``best_run_id``, ``best_run_name``,
    ``best_overrides``)."""
    best = best_values(client, children, metric, mode)
    for path in write_sweep_summary(children, metric, folder, best):
        client.log_artifact(parent, str(path), "sweep")
    results = folder / "optimization_results.yaml"
    if results.exists():
        client.log_artifact(parent, str(results), "sweep")
    if best:
        winner_id = (max if mode == "max" else min)(best, key=best.__getitem__)
        winner = next(run for run in children if run.info.run_id == winner_id)
        client.log_metric(parent, f"best/{metric}", best[winner_id])
        for key, value in {"best_run_id": winner_id, "best_run_name": winner.info.run_name,
                           "best_overrides": winner.data.tags.get("hydra_overrides", "")}.items():
            client.set_tag(parent, key, value)
