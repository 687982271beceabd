"""``probe=mil_ranking``: Sultani, Chen and Shah, "Real-world Anomaly Detection in Surveillance
Videos" (CVPR 2018), on any extraction's clip embeddings.

A video is a bag of ``segments`` temporal segments, each the mean of its clips' embeddings (standardised on train, as
for every probe here, where the paper l2-normalises C3D features). A 512-32-1 MLP (ReLU, then linear, then sigmoid;
dropout 0.6) scores segments; the loss is the hinge ``max(0, 1 - max(anomalous bag) + max(normal bag))`` over every
anomalous/normal pair of a batch, plus ``smoothness * sum (s_i - s_{i+1})^2`` and ``sparsity * sum s_i`` of each
anomalous bag (8e-5 each, the paper's). Batches of ``videos_per_batch`` anomalous and as many normal videos. Only video
labels are read: a clip's score is its segment's. Departures from the paper, said here: the optimizer group (AdamW)
instead of Adagrad, and early stopping on the same loss over the val videos (``val/loss``: video labels only) instead of
a fixed 20,000 iterations; val video-level ROC-AUC is logged beside it (it saturates at 1.0 long before the anomalies
are localised).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from vidlab.probe.config import PROBES, ProbeConfig
from vidlab.probe.data import Split
from vidlab.probe.fitting import FitContext, Standardized, fit_lightning
from vidlab.schema import at_least, require


class Bags:
    """A split's videos as bags of segments: ``features`` (videos, segments, dim), ``labels`` (videos),
    and which segment each clip of the split fell in (to give clips their segment's score)."""

    def __init__(self, split: Split, segments: int):
        videos = split.videos()
        x = split.x
        self.features = np.empty((len(videos), segments, x.shape[1]), np.float32)
        self.labels = np.array([split.y[clips].max() for clips in videos], np.int64)
        self.video_of_clip = np.empty(len(split.y), np.int64)
        self.segment_of_clip = np.empty(len(split.y), np.int64)
        for v, clips in enumerate(videos):
            n = len(clips)
            edges = np.round(np.linspace(0, n, segments + 1)).astype(int)
            for i in range(segments):  # fewer clips than segments: a clip fills several segments
                low = min(edges[i], n - 1)
                self.features[v, i] = x[clips[low : max(edges[i + 1], low + 1)]].mean(axis=0)
            self.video_of_clip[clips] = v
            self.segment_of_clip[clips] = np.clip(np.searchsorted(edges, np.arange(n), side="right") - 1, 0,
                                                  segments - 1)


class BalancedBatches(IterableDataset):
    """``steps`` batches of (anomalous bags, normal bags), each drawn without replacement within a
    batch; seeded per pass, so a run is reproducible."""

    def __init__(self, bags: Bags, per_class: int, steps: int, seed: int):
        self.features = torch.from_numpy(bags.features)
        self.anomalous, self.normal = np.flatnonzero(bags.labels == 1), np.flatnonzero(bags.labels == 0)
        self.per_class, self.steps, self.seed, self.passes = per_class, steps, seed, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        for _ in range(self.steps):
            yield tuple(self.features[rng.choice(group, min(self.per_class, len(group)), replace=False)]
                        for group in (self.anomalous, self.normal))


def segment_scorer(dim: int, hidden: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, width in enumerate(hidden):
        layers += [nn.Linear(dim, width), *([nn.ReLU()] if i == 0 else []), nn.Dropout(dropout)]
        dim = width
    return nn.Sequential(*layers, nn.Linear(dim, 1), nn.Sigmoid())


class MilRanking(L.LightningModule):
    def __init__(self, net: nn.Module, smoothness: float, sparsity: float, optimizer: Any):
        super().__init__()
        self.net, self.smoothness, self.sparsity, self.optimizer_factory = net, smoothness, sparsity, optimizer

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        """(videos, segments, dim) -> segment scores in [0, 1], (videos, segments)."""
        return self.net(bags).squeeze(-1)

    def ranking_loss(self, anomalous: torch.Tensor, normal: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's objective on segment scores of anomalous (A, S) and normal (N, S) bags."""
        hinge = torch.relu(1 - anomalous.max(dim=1).values[:, None] + normal.max(dim=1).values[None, :]).mean()
        smooth = (anomalous[:, 1:] - anomalous[:, :-1]).pow(2).sum(dim=1).mean()
        sparse = anomalous.sum(dim=1).mean()
        return {"loss": hinge + self.smoothness * smooth + self.sparsity * sparse, "hinge": hinge, "smoothness": smooth,
                "sparsity": sparse}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.ranking_loss(self(batch[0]), self(batch[1]))
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return terms["loss"]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        bags, labels = batch
        scores = self(bags)
        self.log("val/loss", self.ranking_loss(scores[labels == 1], scores[labels == 0])["loss"], prog_bar=True,
                 batch_size=len(labels))
        top = scores.max(dim=1).values.float().cpu().numpy()
        self.log("val/video_roc_auc", float(roc_auc_score(labels.cpu().numpy(), top)), batch_size=len(labels))

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


@dataclass
class MilRankingConfig(ProbeConfig):
    """Sultani et al.'s multiple-instance ranking on video-level labels."""

    segments: int
    hidden: list[int]
    dropout: float
    smoothness: float
    sparsity: float
    videos_per_batch: int
    steps_per_epoch: int
    patience: int

    def __post_init__(self) -> None:
        at_least(1, self, "segments", "videos_per_batch", "steps_per_epoch", "patience")
        require(len(self.hidden) > 0 and all(h >= 1 for h in self.hidden),
                f"hidden must be positive widths (got {self.hidden})")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})")
        require(self.smoothness >= 0 and self.sparsity >= 0, "smoothness and sparsity must be >= 0")


@PROBES.register("mil_ranking", MilRankingConfig)
class MilRankingProbe:
    needs_videos = True

    def __init__(self, segments: int, hidden: list[int], dropout: float, smoothness: float, sparsity: float,
                 videos_per_batch: int, steps_per_epoch: int, patience: int):
        self.segments, self.hidden, self.dropout = segments, hidden, dropout
        self.smoothness, self.sparsity = smoothness, sparsity
        self.videos_per_batch, self.steps_per_epoch, self.patience = videos_per_batch, steps_per_epoch, patience
        self.module: MilRanking | None = None
        self.checkpoint: Path | None = None

    def fit(self, splits: dict[str, Split], context: FitContext) -> dict[str, float]:
        train, val = Bags(splits["train"], self.segments), Bags(splits["val"], self.segments)
        self.module = MilRanking(segment_scorer(train.features.shape[2], self.hidden, self.dropout), self.smoothness,
                                 self.sparsity, context.optimizer)
        batches = DataLoader(BalancedBatches(train, self.videos_per_batch, self.steps_per_epoch, context.seed),
                             batch_size=None)
        whole_val = DataLoader([(torch.from_numpy(val.features), torch.from_numpy(val.labels))], batch_size=None)
        selected, self.checkpoint = fit_lightning(self.module, batches, whole_val, context, "val/loss", self.patience,
                                                  mode="min")
        return {**selected, "train/videos": len(train.labels)}

    @torch.no_grad()
    def scores(self, split: Split) -> np.ndarray:
        bags = Bags(split, self.segments)
        self.module.eval()
        segment_scores = self.module(torch.from_numpy(bags.features)).numpy()
        return segment_scores[bags.video_of_clip, bags.segment_of_clip]

    def files(self) -> list[Path]:
        return [self.checkpoint] if self.checkpoint else []

    def mlflow_model(self, scaler: StandardScaler) -> tuple[Standardized, str]:
        return Standardized(scaler, self.module.net.eval(), logits=False), "pytorch"
