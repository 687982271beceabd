"""What a run shows besides its metrics: its config (params and YAML), figures and files; and
:func:`best_effort`, so that logging what only shows a run never fails a job."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from vidlab.tracking.params import log_params
from vidlab.tracking.server import give_up, is_unreachable

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@contextmanager
def best_effort(what: str, client: MlflowClient | None, run_id: str | None) -> Iterator[None]:
    """What only shows a run in the UI (images, figures, datasets, models, descriptions, system
    metrics) never fails a job that trained and tested: a failure is a warning in the log and, when
    the run can still be told, the ``vidlab.logging_failed`` tag."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any failure of the store, the network or a serializer
        from vidlab.errors import one_line

        logging.getLogger(__name__).warning("MLflow: could not log %s: %s", what, one_line(err))
        if is_unreachable(err):  # the job ends saying so (vidlab.jobs), without asking the server again
            give_up()
        elif client is not None and run_id is not None:
            with contextlib.suppress(Exception):
                current = client.get_run(run_id).data.tags.get("vidlab.logging_failed", "")
                client.set_tag(run_id, "vidlab.logging_failed", f"{current} {what}".strip()[:5000])


def log_config(client: MlflowClient, run_id: str, cfg: DictConfig, output_dir: Path,
               groups: tuple[str, ...] | None = None) -> None:
    """Params from the resolved config (only the top-level ``groups`` this run reads, when given),
    and the config itself (plus Hydra's overrides) as YAML."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    log_params(client, run_id, resolved, groups)
    path = output_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(resolved))
    client.log_artifact(run_id, str(path), "config")
    hydra_dir = output_dir / ".hydra"
    for name in ("overrides.yaml", "config.yaml", "hydra.yaml"):
        if (hydra_dir / name).exists():
            client.log_artifact(run_id, str(hydra_dir / name), "hydra")


def log_figures(client: MlflowClient | None, run_id: str | None, figures: dict[str, Figure],
                folder: Path) -> list[Path]:
    """Save each figure as ``folder/<name>`` and log it with ``log_figure`` at the top level of the
    run, where MLflow's compare view shows the same name side by side across runs; then close it."""
    import matplotlib.pyplot as plt

    from vidlab.files import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        with atomic_path(folder / name) as tmp:
            figure.savefig(tmp, dpi=100)
        if client is not None:
            with best_effort(f"figure {name}", client, run_id):
                client.log_figure(run_id, figure, name)
        plt.close(figure)
        paths.append(folder / name)
    return paths


def log_artifacts(client: MlflowClient, run_id: str, files: list[tuple[str, Path]]) -> None:
    """Log each ``(artifact folder, file)``."""
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder)
