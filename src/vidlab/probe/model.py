"""The probes (linear, MLP) and their LightningModule: a clip's anomaly score from its embedding."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vidlab.probe import metrics as pm
from vidlab.probe.config import ProbeConfig
from vidlab.probe.data import EmbeddingRows


def build_probe(cfg: ProbeConfig, dim: int) -> nn.Module:
    if cfg.name == "linear":
        return nn.Linear(dim, 1)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1))


class ProbeModule(L.LightningModule):
    def __init__(self, net: nn.Module, pos_weight: float, optimizer: Any):
        super().__init__()
        self.net, self.optimizer_factory = net, optimizer
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._scores, self._labels = [], []

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self._scores.append(torch.sigmoid(self(x)).cpu())
        self._labels.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        scores, labels = torch.cat(self._scores).numpy(), torch.cat(self._labels).numpy()
        self.log("val/roc_auc", pm.roc_auc(labels, scores), prog_bar=True)
        self.log("val/ap", pm.average_precision(labels, scores))

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


@torch.no_grad()
def predict_scores(module: ProbeModule, data: EmbeddingRows, batch_size: int) -> np.ndarray:
    module.eval()
    return np.concatenate([torch.sigmoid(module(x)).numpy() for x, _ in DataLoader(data, batch_size=batch_size)])
