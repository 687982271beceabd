"""``train.py experiment=probe``: a linear or MLP probe that tells normal clips from anomalous ones,
trained on an extraction's train split, selected on val, reported on test.

Embeddings are read from the memmaps row by row (never loaded whole); rows whose ``valid`` flag is
false are left out and counted. The decision threshold is the one with the best balanced accuracy
on val.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidlab import tracking
from vidlab.config import MlflowLoggerConfig, ProbeModelConfig, validate_probe
from vidlab.embeddings import probe_metrics as pm
from vidlab.errors import InputError
from vidlab.jobs import StopOnSignal, checked_optimizer, job_dirs, trainer_kwargs

SPLITS = ("train", "val", "test")


class ProbeInputError(InputError):
    """The embeddings to probe are missing or inconsistent; the message says which file."""


def resolve_embeddings(reference: str, tracking_uri: str) -> tuple[Path, str | None]:
    """A folder, or the MLflow run id of an extraction (its ``embeddings_dir`` tag)."""
    if Path(reference).is_dir():
        return Path(reference), None
    try:
        run = MlflowClient(tracking_uri).get_run(reference)
    except Exception:
        raise ProbeInputError(f"embeddings: {reference!r} is neither a folder nor an MLflow run id in {tracking_uri}") from None
    folder = run.data.tags.get("embeddings_dir")
    if not folder or not Path(folder).is_dir():
        raise ProbeInputError(f"embeddings: run {reference} has no embeddings_dir tag pointing to a folder (got {folder!r})")
    return Path(folder), reference


def check_manifest(folder: Path) -> dict:
    """The manifest, after checking every split's files against it (shape, dtype, counts)."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise ProbeInputError(f"embeddings: no manifest.json in {folder} (is the extraction finished?)")
    try:
        manifest = json.loads(path.read_text())
        for key in ("splits", "embedding_dim", "dtype", "encoder"):
            manifest[key]  # noqa: B018 - a KeyError names the missing key
        for split in SPLITS:
            info = manifest["splits"].get(split)
            if info is None:
                raise ProbeInputError(f"embeddings: {folder} has no {split} split")
            emb = _load(folder / info["files"]["embeddings"])
            expected = (info["rows"], manifest["embedding_dim"])
            if emb.shape != expected or str(emb.dtype) != manifest["dtype"]:
                raise ProbeInputError(f"embeddings: {folder / info['files']['embeddings']} is {emb.shape} {emb.dtype}, "
                                      f"the manifest says {expected} {manifest['dtype']}")
            for kind in ("labels", "valid"):
                arr = _load(folder / info["files"][kind])
                if arr.shape != (info["rows"],):
                    raise ProbeInputError(f"embeddings: {folder / info['files'][kind]} has shape {arr.shape}, expected ({info['rows']},)")
    except json.JSONDecodeError as err:
        raise ProbeInputError(f"embeddings: {path} is not valid JSON ({err})") from None
    except (KeyError, TypeError) as err:
        raise ProbeInputError(f"embeddings: {path} is not an extraction manifest (missing or wrong {err})") from None
    return manifest


def _load(path: Path) -> np.ndarray:
    """A memmapped ``.npy``; a missing or truncated file is a one-line error naming it."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ProbeInputError(f"embeddings: cannot read {path} ({str(err).splitlines()[0]})") from None


def check_rows(rows: EmbeddingRows, split: str, folder: Path) -> None:
    """Labels in {0, 1}, finite embeddings, both classes: a probe on anything else measures nothing."""
    labels = np.asarray(rows.labels)[rows.rows]
    if len(rows) == 0:
        raise ProbeInputError(f"embeddings: no valid row in the {split} split of {folder}")
    if not np.isin(labels, (0, 1)).all():
        raise ProbeInputError(f"embeddings: {split} labels must be 0 or 1, found {sorted(int(v) for v in set(np.unique(labels)) - {0, 1})[:5]} in {folder}")
    if len(np.unique(labels)) < 2:
        raise ProbeInputError(f"embeddings: the {split} split of {folder} has only label {int(labels[0])}: ROC-AUC needs both classes")
    for start in range(0, len(rows.rows), 65536):
        block = np.asarray(rows.embeddings[rows.rows[start : start + 65536]], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = rows.rows[start + int(np.nonzero(~np.isfinite(block).all(axis=1))[0][0])]
            raise ProbeInputError(f"embeddings: row {bad} of the {split} split of {folder} is not finite (NaN or inf)")


class EmbeddingRows(Dataset):
    """The valid rows of one split, read from the memmap on access."""

    def __init__(self, folder: Path, manifest: dict, split: str):
        files = manifest["splits"][split]["files"]
        self.embeddings = np.load(folder / files["embeddings"], mmap_mode="r")
        self.labels = np.load(folder / files["labels"], mmap_mode="r")
        valid = np.load(folder / files["valid"])
        self.rows = np.nonzero(valid)[0]
        self.invalid = int((~valid).sum())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        return torch.from_numpy(np.asarray(self.embeddings[row], dtype=np.float32)), torch.tensor(float(self.labels[row]))


def build_probe(cfg: ProbeModelConfig, dim: int) -> nn.Module:
    if cfg.name == "linear_probe":
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


def _plots(labels: np.ndarray, scores: np.ndarray, threshold: float, folder: Path) -> list[Path]:
    fpr, tpr = pm.roc_curve(labels, scores)
    precision, recall = pm.precision_recall(labels, scores)
    matrix = pm.confusion(labels, scores >= threshold)
    paths = []
    for name, draw in (
        ("roc.png", lambda ax: (ax.plot(fpr, tpr), ax.plot([0, 1], [0, 1], "--", color="grey"),
                                ax.set(xlabel="false positive rate", ylabel="true positive rate",
                                       title=f"test ROC (AUC {pm.roc_auc(labels, scores):.3f})"))),
        ("pr.png", lambda ax: (ax.step(recall, precision, where="post"),
                               ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02),
                                      title=f"test precision-recall (AP {pm.average_precision(labels, scores):.3f})"))),
        ("confusion.png", lambda ax: (ax.imshow(matrix, cmap="Blues"),
                                      [ax.text(j, i, int(matrix[i, j]), ha="center", va="center") for i in range(2) for j in range(2)],
                                      ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["normal", "anomalous"],
                                             yticklabels=["normal", "anomalous"], xlabel="predicted", ylabel="true",
                                             title=f"test confusion at threshold {threshold:.3f}"))),
    ):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        draw(ax)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        paths.append(folder / name)
    return paths


def run_probe(cfg: DictConfig) -> float | None:
    spec = validate_probe(cfg)
    kwargs = trainer_kwargs(cfg)
    optimizer = checked_optimizer(cfg)
    root, output_dir = job_dirs(cfg)
    uri = tracking.resolve_tracking_uri(getattr(spec.logger, "tracking_uri", "sqlite:///mlruns.db"), root)
    folder, run_ref = resolve_embeddings(spec.embeddings, uri)
    manifest = check_manifest(folder)
    L.seed_everything(spec.seed, workers=True)
    data = {split: EmbeddingRows(folder, manifest, split) for split in SPLITS}
    for split, rows in data.items():
        check_rows(rows, split, folder)
    train_labels = np.asarray(data["train"].labels)[data["train"].rows]
    n_pos, n_neg = int(train_labels.sum()), int(len(train_labels) - train_labels.sum())
    pos_weight = n_neg / max(n_pos, 1) if spec.probe.class_weight == "auto" else 1.0
    module = ProbeModule(build_probe(spec.model, manifest["embedding_dim"]), pos_weight, optimizer)

    logger = None
    if isinstance(spec.logger, MlflowLoggerConfig):
        tags = {"task": "probe", "embeddings_dir": str(folder), "backbone": manifest["encoder"],
                "extraction_run_id": run_ref or manifest.get("mlflow_run_id") or ""}
        name = spec.logger.run_name or f"{spec.model.name}-{manifest['encoder'].split('/')[-1]}_T{manifest.get('T', '')}"
        logger = tracking.build_logger(replace(spec.logger, run_name=name), root, output_dir, tags)
        tracking.log_config(logger.experiment, logger.run_id, cfg, output_dir)
    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="best", monitor=spec.optimized_metric, mode="max")
    trainer = L.Trainer(**kwargs, logger=logger or False, callbacks=[checkpoint, StopOnSignal()], default_root_dir=str(output_dir))
    loader = lambda split, shuffle: DataLoader(data[split], batch_size=spec.probe.batch_size, shuffle=shuffle,  # noqa: E731
                                              num_workers=spec.probe.num_workers)
    trainer.fit(module, loader("train", True), loader("val", False))
    if checkpoint.best_model_path:
        module.load_state_dict(torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"])

    scores = {split: predict_scores(module, data[split], spec.probe.batch_size) for split in ("val", "test")}
    labels = {split: np.asarray(data[split].labels)[data[split].rows] for split in ("val", "test")}
    threshold = pm.best_threshold(labels["val"], scores["val"])
    metrics = {"threshold": threshold, "rows_invalid_left_out": sum(d.invalid for d in data.values()),
               "train/pos_weight": pos_weight}
    for split in ("val", "test"):
        y, s = labels[split], scores[split]
        metrics.update({f"{split}/roc_auc": pm.roc_auc(y, s), f"{split}/ap": pm.average_precision(y, s),
                        f"{split}/balanced_accuracy": pm.balanced_accuracy(y, s >= threshold),
                        f"{split}/f1": pm.f1(y, s >= threshold)})
    test_rows = data["test"].rows
    table = pd.DataFrame({"split_row": test_rows, "y": labels["test"], "score": scores["test"]})
    index_path = Path(manifest["index"]["path"])
    if index_path.is_file():
        index = pd.read_csv(index_path)
        test_index = index[index.split == "test"].reset_index(drop=True).iloc[test_rows].reset_index(drop=True)
        table = pd.concat([test_index[["path", "clip_idx", "start_frame", "end_frame", "n_frames"]], table], axis=1)
        if spec.probe.annotations:
            auc, videos = pm.frame_level_auc(table, pm.read_temporal_annotations(spec.probe.annotations))
            metrics.update({"test/frame_roc_auc": auc, "test/frame_videos": videos})
    out = output_dir / "probe"
    out.mkdir(exist_ok=True)
    table.to_csv(out / "test_scores.csv", index=False)
    files = [("probe", out / "test_scores.csv")] + [("probe/plots", p) for p in _plots(labels["test"], scores["test"], threshold, out)]
    print("\n".join(f"{k}: {float(v):.4f}" for k, v in metrics.items()))
    if logger is not None:
        logger.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=trainer.global_step)
        if checkpoint.best_model_path:
            files.append(("checkpoints", Path(checkpoint.best_model_path)))
        tracking.log_artifacts(logger.experiment, logger.run_id, files)
        logger.finalize("success")
    best = checkpoint.best_model_score
    return float(best) if best is not None else metrics["val/roc_auc"]

