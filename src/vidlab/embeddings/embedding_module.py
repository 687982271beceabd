"""Embedding extraction as Lightning prediction: the frozen backbone runs in ``predict_step`` on every
rank, and :class:`StoreWriter` writes each batch's rows into the shared memmaps as it arrives."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from tqdm import tqdm

from vidlab.embeddings.chunks import gather_clips
from vidlab.embeddings.clip_dataset import VideoClipStream
from vidlab.embeddings.store import EmbeddingStore
from vidlab.video import VideoReadError


class EmbeddingExtractor(L.LightningModule):
    """The frozen backbone behind the device half of preprocessing: ``spatial`` (resize, crop) when the
    readers left the frames at native size, then ``normalize``. The embeddings start their copy to the
    host without waiting (``non_blocking``: pinned memory on CUDA), so the next batch is queued on the
    device while :class:`StoreWriter` waits only for the previous one's copy."""

    def __init__(self, backbone: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                 spatial: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 channels_last: bool = False, compile: bool = False):
        super().__init__()
        self.normalize, self.spatial, self.channels_last = normalize, spatial, channels_last
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last_3d)
        self.backbone = torch.compile(backbone) if compile else backbone

    def transfer_batch_to_device(self, batch: dict[str, Any], device: torch.device,
                                 dataloader_idx: int) -> dict[str, Any]:
        """Only the clips go to the device: row ids and flags stay on the host, where the writer reads
        them without synchronising the device."""
        if "frames" not in batch:
            return batch
        return {**batch, "frames": batch["frames"].to(device, non_blocking=True),
                "clips": batch["clips"].to(device, non_blocking=True)}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if "failed_rows" in batch:
            return batch
        frames = batch["frames"]
        if self.spatial is not None:
            frames = self.spatial(frames)
        x = self.normalize(gather_clips(frames, batch["clips"]))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        emb = self.backbone(x).float().to("cpu", non_blocking=True)
        copied = None
        if x.device.type == "cuda":
            copied = torch.cuda.Event()
            copied.record()
        return {"rows": batch["rows"], "padded": batch["padded"], "emb": emb, "copied": copied}


class StoreWriter(BasePredictionWriter):
    """Writes rows as batches finish, each one batch late so the device never waits on the host;
    applies ``on_error`` to rows of unreadable videos."""

    def __init__(self, store: EmbeddingStore, stream: VideoClipStream, on_error: str, total_rows: int):
        super().__init__(write_interval="batch")
        self.store, self.stream, self.on_error, self.total = store, stream, on_error, total_rows
        self.rows_written = self.rows_failed = 0
        self.seconds = self.startup_seconds = 0.0  # from the first batch to the end; before it (readers starting)
        self._bar: tqdm | None = None
        self._pending: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # runs on every rank after the process group exists and before the stream's readers start
        self.stream.rank, self.stream.world_size = trainer.global_rank, trainer.world_size

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_batch = time.perf_counter(), None
        if trainer.is_global_zero:
            self._bar = tqdm(total=self.total, desc="extracting", unit="clip", dynamic_ncols=True)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self._first_batch is None:  # the readers have started and delivered: the steady state begins
            self._first_batch = time.perf_counter()
            self.startup_seconds = self._first_batch - self._start

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        if "failed_rows" in prediction:
            rows = prediction["failed_rows"].cpu().numpy()
            if self.on_error == "fail":
                raise VideoReadError(f"{prediction['reason']} (index rows {rows.tolist()}); "
                                     "set extraction.on_error=skip to mark them invalid and go on")
            self.store.fail(rows, prediction["reason"])
            self.rows_failed += len(rows)
            self._advance(trainer, len(rows))
            return
        self._write_pending(trainer)
        self._pending = prediction  # written once the next batch is queued: its copy to the host overlaps that

    def _write_pending(self, trainer: L.Trainer) -> None:
        prediction, self._pending = self._pending, None
        if prediction is None:
            return
        if prediction["copied"] is not None:
            prediction["copied"].synchronize()
        rows = prediction["rows"].numpy()
        self.store.write(rows, prediction["emb"].numpy(), prediction["padded"].numpy())
        self.rows_written += len(rows)
        self._advance(trainer, len(rows))

    def _advance(self, trainer: L.Trainer, rows: int) -> None:
        if self._bar is not None:
            self._bar.update(rows * trainer.world_size)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_pending(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - (self._first_batch or self._start)
        self._close_bar()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        with suppress(RuntimeError):  # a batch computed before the stop is kept; a broken device keeps it pending
            self._write_pending(trainer)
        self._close_bar()  # before the job's last line (an error or "stopped by ..."), not after it

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def clips_per_second(self) -> float:
        return (self.rows_written + self.rows_failed) / self.seconds if self.seconds else float("nan")

