"""Hydra ``-m`` sweeps in MLflow: one parent run per sweep, its jobs as children, a summary at the end
(registered in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from vidlab.schema import MlflowLoggerConfig, build_node
from vidlab.tracking import PARENT_RUN_FILE, ensure_experiment, git_commit, resolve_tracking_uri


def _sweep_logger(config: DictConfig) -> tuple[MlflowLoggerConfig, Path] | None:
    node = config.get("logger")
    if node is None or node.get("name") != "mlflow":
        return None
    resolved = OmegaConf.to_container(node, resolve=True)
    return build_node("logger", MlflowLoggerConfig, resolved), Path(str(config.paths.root)).resolve()


class MlflowSweepCallback(HydraCallback):
    """Groups a ``-m`` sweep in MLflow: the store and experiment are prepared once, before any job
    starts (parallel processes creating a fresh SQLite store corrupt it), a parent run is opened and
    every job becomes its child; at the end the parent gets a summary CSV (each job's overrides and
    final metrics), a plot of the optimized metric against each swept parameter, and Optuna's
    ``optimization_results.yaml`` when there is one."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        found = _sweep_logger(config)
        if found is None:
            return
        cfg, root = found
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = ensure_experiment(cfg, root)
        client = MlflowClient(resolve_tracking_uri(cfg.tracking_uri, root))
        tags = {"sweep_dir": str(sweep_dir), "sweep_id": hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:12],
                "sweep_overrides": " ".join(config.hydra.overrides.task), "vidlab.sweep_parent": "true"}
        commit = git_commit(root)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = client.create_run(experiment_id, run_name=f"sweep-{sweep_dir.name}", tags=tags)
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        found = _sweep_logger(config)
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if found is None or not (sweep_dir / PARENT_RUN_FILE).exists():
            return
        cfg, root = found
        client = MlflowClient(resolve_tracking_uri(cfg.tracking_uri, root))
        parent = (sweep_dir / PARENT_RUN_FILE).read_text().strip()
        experiment_id = client.get_run(parent).info.experiment_id
        children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
        metric = str(config.get("optimized_metric", ""))
        summary = write_sweep_summary(children, metric, sweep_dir)
        for path in summary:
            client.log_artifact(parent, str(path), "sweep")
        results = sweep_dir / "optimization_results.yaml"
        if results.exists():
            client.log_artifact(parent, str(results), "sweep")
            best = OmegaConf.load(results)
            if "best_value" in best:
                client.log_metric(parent, f"best/{metric}" if metric else "best_value", float(best.best_value))
        client.log_metric(parent, "jobs", len(children))
        client.set_terminated(parent, "FINISHED")


def write_sweep_summary(children: list, metric: str, folder: Path) -> list[Path]:
    """``sweep_summary.csv`` and ``sweep_<metric>.png`` (the metric against each swept parameter)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = []
    for run in children:
        overrides = dict(o.split("=", 1) for o in run.data.tags.get("hydra_overrides", "").split() if "=" in o)
        rows.append({"run_id": run.info.run_id, "run_name": run.info.run_name, "job": run.data.tags.get("hydra_job_num"),
                     "status": run.info.status, **{f"override.{k}": v for k, v in overrides.items()},
                     **run.data.metrics})
    table = pd.DataFrame(rows).sort_values("job", key=lambda s: pd.to_numeric(s, errors="coerce")) if rows else pd.DataFrame()
    csv = folder / "sweep_summary.csv"
    table.to_csv(csv, index=False)
    files = [csv]
    swept = [c for c in table.columns if c.startswith("override.") and table[c].nunique() > 1]
    if metric in table.columns and swept:
        fig, axes = plt.subplots(1, len(swept), figsize=(4.5 * len(swept), 3.8), squeeze=False)
        for ax, column in zip(axes[0], swept):
            x = pd.to_numeric(table[column], errors="coerce")
            ax.plot(x if x.notna().all() else table[column].astype(str), table[metric], "o")
            ax.set(xlabel=column.removeprefix("override."), ylabel=metric)
        fig.tight_layout()
        png = folder / f"sweep_{metric.replace('/', '_')}.png"
        fig.savefig(png, dpi=100)
        plt.close(fig)
        files.append(png)
    return files
