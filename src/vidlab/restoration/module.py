"""The restoration LightningModule: training, clip-level evaluation with smoothing and baselines.

The model is any registered :class:`~vidlab.restoration.nets.RestorationNet`: it says what a training batch gives (its
restored frames, their targets, and losses of its own) and restores clips; this module adds the weighted L1 and SSIM
losses, the optimizer and the evaluation. Evaluation runs on whole clips in time order: the model restores every frame
(temporal models see edge-repeated neighbours), the configured smoothing runs over the restored clip, and the metrics of
the stained input, the raw output, the smoothed output and (at test time) the reference restorations of
:mod:`~vidlab.restoration.baselines` are gathered per clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch

from vidlab import __version__
from vidlab.registry import build_node
from vidlab.restoration.baselines import run_baseline
from vidlab.restoration.config import VARIANTS, LossConfig
from vidlab.restoration.metrics import clip_metrics, per_frame_curves, ssim_map
from vidlab.restoration.nets import MODELS, RestorationNet
from vidlab.restoration.smoothing import SMOOTHINGS, Smoother
from vidlab.restoration.streaming import to_uint8

LOSS_WEIGHTS = {"mask_bce": "mask_weight", "inverse_l1": "inverse_weight"}  # the config key weighing each stain loss


def _as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


def aggregate(records: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """Mean over clips of every ``variant/metric`` key, ignoring NaN (clips without such pixels); NaN
    when no clip has such pixels (no stain, or no content inside one)."""
    keys = [k for k in records[0] if "/" in k] if records else []
    out = {}
    for key in keys:
        values = np.array([r[key] for r in records], dtype=np.float64)
        out[f"{prefix}/{key}"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return out


class RestorationModule(L.LightningModule):
    def __init__(
        self,
        model: dict,
        smoothing: dict,
        loss: dict,
        compare_smoothing: list[str] | tuple[str, ...] = (),
        compare_baselines: list[str] | tuple[str, ...] = (),
        preview_clip: int = 0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.model_cfg = MODELS.config(model)
        self.loss_cfg: LossConfig = build_node("loss", LossConfig, loss)
        self.smoothing_cfg = SMOOTHINGS.config(smoothing)
        self.smoother: Smoother = SMOOTHINGS.build(self.smoothing_cfg)
        self.net: RestorationNet = MODELS.build(self.model_cfg)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.records: list[dict[str, Any]] = []
        self.preview: dict[str, np.ndarray] = {}
        self.val_preview: dict[str, np.ndarray] = {}  # the middle frame of each output of the preview clip
        self.curves: dict[str, dict[str, list[float]]] = {}
        self.test_summary: dict[str, float] = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vidlab_version"] = __version__  # what checkpoints.read_checkpoint upgrades from

    # ------------------------------------------------------------------ model
    @torch.no_grad()
    def restore_clip(
        self, clip: torch.Tensor, mask: torch.Tensor | None = None, batch: int = 16, centres: range | None = None,
        stains: dict[tuple[int, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Restore every frame of a float clip ``(T, 3, H, W)`` (or only ``centres``, so a streamed block
        can carry neighbours as context without restoring them); returns it clamped to [0, 1].
        ``stains``: a fitted blend model's stain per segment, found on whole frames (restore's tiles)."""
        centres = np.arange(clip.shape[0]) if centres is None else np.asarray(centres)
        return self.net.restore(clip, centres, batch, mask, stains)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        floats = {"stained": _as_float(batch["stained"]), "clean": _as_float(batch["clean"])}
        pred, clean, mask, stain_losses = self.net.training_output({**batch, **floats})
        weight = 1 + self.loss_cfg.stain_weight * mask
        l1 = (weight * (pred - clean).abs()).mean() / weight.mean()
        loss = l1
        for name, value in stain_losses.items():
            loss = loss + getattr(self.loss_cfg, LOSS_WEIGHTS[name]) * value
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=len(pred))
        if self.loss_cfg.ssim_weight > 0:
            loss = loss + self.loss_cfg.ssim_weight * (1 - ssim_map(pred, clean).mean())
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(pred))
        self.log("train/l1", l1, on_step=False, on_epoch=True, batch_size=len(pred))
        return loss

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured: pass optimizer= (a partial of a torch optimizer)")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}

    # ------------------------------------------------------------------ evaluation
    def _evaluate_clip(self, batch: dict[str, Any], extra: dict[str, Smoother],
                       baselines: tuple[str, ...] = ()) -> dict[str, Any]:
        clip, clean, mask = _as_float(batch["stained"][0]), _as_float(batch["clean"][0]), batch["mask"][0]
        restored = self.restore_clip(clip, mask)
        outputs = {"stained": clip, "raw": restored, "smoothed": self.smoother(restored, clip)}
        outputs.update({f"smoothing_{name}": smoother(restored, clip) for name, smoother in extra.items()})
        outputs.update({f"baseline_{name}": run_baseline(name, clip, mask, batch["offset"][0]) for name in baselines})
        record: dict[str, Any] = {"video_idx": int(batch["video_idx"][0]), "clip_idx": int(batch["clip_idx"][0])}
        for variant, frames in outputs.items():
            for metric, value in clip_metrics(frames, clean, mask).items():
                record[f"{variant}/{metric}"] = value
        record["_outputs"] = (clean, outputs)
        return record

    def on_validation_epoch_start(self) -> None:
        self.records = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        record = self._evaluate_clip(batch, {})
        clean, outputs = record.pop("_outputs")
        if batch_idx == self.hparams.preview_clip:
            middle = clean.shape[0] // 2
            self.val_preview = {"clean": to_uint8(clean[middle : middle + 1]),
                                **{k: to_uint8(outputs[k][middle : middle + 1]) for k in VARIANTS}}
        self.records.append(record)

    def on_validation_epoch_end(self) -> None:
        # Every key is logged, NaN included: a monitor or sweeper always finds its metric (a NaN
        # epoch ranks last in ModelCheckpoint), and the run shows the metric was undefined.
        for key, value in aggregate(self.records, "val").items():
            self.log(key, value, prog_bar=key.endswith("smoothed/psnr_content_stain"))

    def _comparison_smoothers(self) -> dict[str, Smoother]:
        compared = {}
        for name in self.hparams.compare_smoothing:
            if name == "none":  # the raw output already is this variant
                continue
            cfg = self.smoothing_cfg if name == self.smoothing_cfg.name else SMOOTHINGS.from_conf(name)
            compared[name] = SMOOTHINGS.build(cfg)
        return compared

    def on_test_epoch_start(self) -> None:
        self.records, self.preview, self.curves = [], {}, {}
        self._compared = self._comparison_smoothers()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        record = self._evaluate_clip(batch, self._compared, tuple(self.hparams.compare_baselines))
        clean, outputs = record.pop("_outputs")
        if batch_idx == self.hparams.preview_clip:
            self.preview = {"clean": to_uint8(clean), **{k: to_uint8(outputs[k]) for k in VARIANTS}}
            self.curves = {k: per_frame_curves(outputs[k], clean) for k in VARIANTS}
        self.records.append(record)

    def on_test_epoch_end(self) -> None:
        self.test_summary = aggregate(self.records, "test")
        for key, value in self.test_summary.items():
            if math.isfinite(value):
                self.log(key, value)


class ClipRestorer(torch.nn.Module):
    """The trained restoration as an MLflow model: a float clip ``(T, 3, H, W)`` in [0, 1] in, the
    restored and smoothed clip out (what ``python -m vidlab.restore`` computes on a whole video)."""

    def __init__(self, module: RestorationModule):
        super().__init__()
        self.module = module

    @torch.no_grad()
    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        restored = self.module.restore_clip(clip.float())
        return self.module.smoother(restored, clip.float())


def module_from_spec(spec: Any, optimizer: Callable | None, scheduler: Callable | None) -> RestorationModule:
    return RestorationModule(
        model=asdict(spec.model),
        smoothing=asdict(spec.smoothing),
        loss=asdict(spec.loss),
        compare_smoothing=list(spec.top.compare_smoothing),
        compare_baselines=list(spec.top.compare_baselines),
        preview_clip=spec.preview.clip,
        optimizer=optimizer,
        scheduler=scheduler,
    )
