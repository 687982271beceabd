"""``train.py task=probe``: a linear or MLP probe that tells normal clips from anomalous ones,
trained on an extraction's train split, selected on val, reported on test.

Embeddings are read from the memmaps row by row (never loaded whole); rows whose ``valid`` flag is
false are left out and counted. The decision threshold is the one with the best balanced accuracy
on val.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vidlab import tracking
from vidlab.jobs import StopOnSignal, checked_optimizer, job_dirs, trainer_kwargs
from vidlab.probe import metrics as pm
from vidlab.probe.config import validate_probe
from vidlab.probe.data import EmbeddingRows, check_manifest, check_rows, resolve_embeddings
from vidlab.probe.model import ProbeModule, build_probe, predict_scores
from vidlab.schema import MlflowLoggerConfig
from vidlab.splits import SPLITS


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


def run(cfg: DictConfig) -> float | None:
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
    module = ProbeModule(build_probe(spec.probe, manifest["embedding_dim"]), pos_weight, optimizer)

    logger = None
    if isinstance(spec.logger, MlflowLoggerConfig):
        tags = {"task": "probe", "embeddings_dir": str(folder), "backbone": manifest["backbone"],
                "extraction_run_id": run_ref or manifest.get("mlflow_run_id") or ""}
        name = spec.logger.run_name or f"{spec.probe.name}_probe-{manifest['backbone'].split('/')[-1]}_T{manifest.get('frames_per_clip', '')}"
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

