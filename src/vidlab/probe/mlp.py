"""``probe=mlp``: a two-layer MLP on standardised clip embeddings, trained with Lightning (BCE, the
positive class weighted), stopped early on val ROC-AUC with the best epoch's weights kept: it
converges on its own instead of stopping at an epoch budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vidlab.probe.config import PROBES, ProbeConfig
from vidlab.probe.data import CHUNK_ROWS, Split
from vidlab.probe.fitting import FitContext, Standardized, fit_lightning
from vidlab.schema import at_least, one_of, require


class ClipClassifier(L.LightningModule):
    """Clip labels in, a logit per clip out; logs ``val/roc_auc`` each epoch (scikit-learn's)."""

    def __init__(self, net: nn.Module, pos_weight: float, optimizer: Any):
        super().__init__()
        self.net, self.optimizer_factory = net, optimizer
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._val.append((self(x).float().cpu(), y.cpu()))

    def on_validation_epoch_end(self) -> None:
        scores, labels = (torch.cat(parts).numpy() for parts in zip(*self._val))
        self.log("val/roc_auc", float(roc_auc_score(labels, scores)), prog_bar=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


@dataclass
class MlpConfig(ProbeConfig):
    """A Lightning MLP on clip embeddings, stopped early on val ROC-AUC."""

    hidden: int
    dropout: float
    batch_size: int
    patience: int
    class_weight: str

    def __post_init__(self) -> None:
        at_least(1, self, "hidden", "batch_size", "patience")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")
        one_of(self, "class_weight", "auto", "none")


@PROBES.register("mlp", MlpConfig)
class MlpProbe:
    needs_videos = False

    def __init__(self, hidden: int, dropout: float, batch_size: int, patience: int, class_weight: str):
        self.hidden, self.dropout, self.batch_size, self.patience, self.class_weight = (hidden, dropout, batch_size,
                                                                                        patience, class_weight)
        self.module: ClipClassifier | None = None
        self.checkpoint: Path | None = None

    def fit(self, splits: dict[str, Split], context: FitContext) -> dict[str, float]:
        train, val = splits["train"], splits["val"]
        n_pos = int(train.y.sum())
        pos_weight = (len(train.y) - n_pos) / n_pos if self.class_weight == "auto" else 1.0
        net = nn.Sequential(nn.Linear(train.x.shape[1], self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                            nn.Linear(self.hidden, 1))
        self.module = ClipClassifier(net, pos_weight, context.optimizer)
        loader = lambda split, shuffle: DataLoader(  # noqa: E731 - in memory already: no worker would be faster
            TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y.astype(np.float32))),
            batch_size=self.batch_size, shuffle=shuffle)
        selected, self.checkpoint = fit_lightning(self.module, loader(train, True), loader(val, False), context,
                                                  "val/roc_auc", self.patience)
        return {**selected, "train/pos_weight": pos_weight}

    @torch.no_grad()
    def scores(self, split: Split) -> np.ndarray:
        self.module.eval()
        return np.concatenate([torch.sigmoid(self.module(torch.from_numpy(split.x[start : start + CHUNK_ROWS]))).numpy()
                               for start in range(0, len(split.x), CHUNK_ROWS)])

    def files(self) -> list[Path]:
        return [self.checkpoint] if self.checkpoint else []

    def mlflow_model(self, scaler: StandardScaler) -> tuple[Standardized, str]:
        return Standardized(scaler, self.module.net.eval(), logits=True), "pytorch"
