"""Embedding extraction as Lightning prediction: the frozen backbone runs in ``predict_step`` on every
rank, and :class:`StoreWriter` writes each batch's rows into the shared memmaps as it arrives."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cv2
import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from tqdm import tqdm

from vidlab.embeddings.clip_dataset import VideoClipStream
from vidlab.embeddings.store import EmbeddingStore
from vidlab.video import VideoReadError


class EmbeddingExtractor(L.LightningModule):
    def __init__(self, backbone: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                 channels_last: bool = False, compile: bool = False):
        super().__init__()
        self.normalize, self.channels_last = normalize, channels_last
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last_3d)
        self.backbone = torch.compile(backbone) if compile else backbone

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if "failed_rows" in batch:
            return batch
        x = self.normalize(batch["x"])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return {"rows": batch["rows"], "padded": batch["padded"], "emb": self.backbone(x).float()}


class StoreWriter(BasePredictionWriter):
    """Writes rows as batches finish; applies ``on_error`` to rows of unreadable videos."""

    def __init__(self, store: EmbeddingStore, stream: VideoClipStream, on_error: str, total_rows: int):
        super().__init__(write_interval="batch")
        self.store, self.stream, self.on_error, self.total = store, stream, on_error, total_rows
        self.rows_written = self.rows_failed = 0
        self.seconds = 0.0
        self._bar: tqdm | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # runs on every rank after the process group exists and before the loader's workers start
        self.stream.rank, self.stream.world_size = trainer.global_rank, trainer.world_size

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        if trainer.is_global_zero:
            self._bar = tqdm(total=self.total, desc="extracting", unit="clip", dynamic_ncols=True)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        if "failed_rows" in prediction:
            rows = prediction["failed_rows"].cpu().numpy()
            if self.on_error == "fail":
                raise VideoReadError(f"{prediction['reason']} (index rows {rows.tolist()}); "
                                     "set extraction.on_error=skip to mark them invalid and go on")
            self.store.fail(rows, prediction["reason"])
            self.rows_failed += len(rows)
        else:
            rows = prediction["rows"].cpu().numpy()
            self.store.write(rows, prediction["emb"].cpu().numpy(), prediction["padded"].cpu().numpy())
            self.rows_written += len(rows)
        if self._bar is not None:
            self._bar.update(len(rows) * trainer.world_size)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start
        self._close_bar()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close_bar()  # before the job's last line (an error or "stopped by ..."), not after it

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def clips_per_second(self) -> float:
        return (self.rows_written + self.rows_failed) / self.seconds if self.seconds else float("nan")


def worker_init(_: int) -> None:
    # decoding and resizing run in the workers; one thread each keeps them from fighting over cores
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
