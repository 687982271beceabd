"""What a probe's ``fit`` gets besides the data, and the Lightning fit the trained probes share:
checkpoint on the probe's validation metric, early stopping, best weights restored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from vidlab.probe.data import Split
from vidlab.trainer import EpochLog, StopOnSignal, checkpoint_folder


@dataclass
class FitContext:
    trainer_kwargs: dict[str, Any]
    optimizer: Callable               # the optimizer group's factory
    logger: Any                       # the run's MLflow logger, or None
    output_dir: Path
    seed: int


class Probe(Protocol):
    """A choice of ``conf/probe/``: trained on the train split, selected on val, then scores clips."""

    needs_videos: bool  # trains on videos (bags of their clips), so the clip index must be there

    def fit(self, splits: dict[str, Split], context: FitContext) -> dict[str, float]:
        """Train; returns what model selection chose (``probe/C``, ``probe/best_epoch``...)."""

    def scores(self, split: Split) -> np.ndarray:
        """An anomaly score per clip of ``split`` (higher: more anomalous)."""

    def files(self) -> list[Path]:
        """The trained probe's files, to log beside the run."""

    def mlflow_model(self, scaler: StandardScaler) -> tuple[Any, str]:
        """The trained probe on raw embeddings (the train split's standardisation first) as an MLflow
        model, with its flavour (``sklearn`` or ``pytorch``): anomaly scores in [0, 1] out."""


class Standardized(torch.nn.Module):
    """A torch probe on raw embeddings: the train split's standardisation, the network, then
    ``sigmoid`` when the network ends on logits."""

    def __init__(self, scaler: StandardScaler, net: torch.nn.Module, logits: bool):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(scaler.mean_, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scaler.scale_, dtype=torch.float32))
        self.net, self.logits = net, logits

    @torch.no_grad()
    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        scores = self.net((embeddings.float() - self.mean) / self.scale).squeeze(-1)
        return torch.sigmoid(scores) if self.logits else scores


def fit_lightning(module: L.LightningModule, train: DataLoader, val: DataLoader, context: FitContext,
                  monitor: str, patience: int, mode: str = "max") -> tuple[dict[str, float], Path | None]:
    """Fit until ``monitor`` (maximised, or minimised with ``mode="min"``) has not improved for ``patience`` validations
    or the trainer's cap; the best weights are loaded back. Returns the selection metrics and the best checkpoint."""
    checkpoint = ModelCheckpoint(dirpath=checkpoint_folder(context.output_dir), filename="best", monitor=monitor,
                                 mode=mode)
    stopping = EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    trainer = L.Trainer(**context.trainer_kwargs, logger=context.logger or False,
                        callbacks=[checkpoint, stopping, StopOnSignal(), EpochLog()],
                        default_root_dir=str(context.output_dir))
    trainer.fit(module, train, val)
    if not checkpoint.best_model_path:
        return {"probe/epochs": trainer.current_epoch}, None
    state = torch.load(checkpoint.best_model_path, weights_only=True)
    module.load_state_dict(state["state_dict"])
    return {"probe/best_epoch": state["epoch"], "probe/epochs": trainer.current_epoch}, Path(checkpoint.best_model_path)
