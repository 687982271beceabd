"""Training throughput: the Lightning module against a plain PyTorch loop on the same model and
batches, and the data pipeline alone, in frames/s, measured in one run (ratios, not timings).

    python benchmarks/train_throughput.py [--steps 40] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from vidlab.restoration.config import validate
from vidlab.restoration.corruption import CORRUPTIONS
from vidlab.restoration.datamodule import RestorationDataModule
from vidlab.restoration.module import module_from_spec

ROOT = Path(__file__).resolve().parents[1]


class _EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds = time.perf_counter() - self.start


def plain_loop(module: torch.nn.Module, batches: list[dict], optimizer: torch.optim.Optimizer,
               stain_weight: float) -> float:
    start = time.perf_counter()
    module.train()
    for batch in batches:
        stained, clean, mask = batch["stained"].float() / 255, batch["clean"].float() / 255, batch["mask"]
        pred = module(stained, mask)
        weight = 1 + stain_weight * mask
        loss = (weight * (pred - clean).abs()).mean() / weight.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        # the per-frame U-Net: the plain loop below feeds it frames (the table's model; 0.2's default)
        cfg = compose("train", overrides=[f"paths.root={ROOT}", "paths.output_dir=/tmp/vidlab-bench", "model=unet",
                                          "smoothing=masked", *args.overrides])
    spec = validate(cfg)
    torch.manual_seed(0)
    data = RestorationDataModule(spec.dataset, CORRUPTIONS.build(spec.corruption), spec.model.context_frames)
    data.prepare_data()
    data.setup("fit")

    loader = data.train_dataloader()
    start, frames, batches = time.perf_counter(), 0, []
    for batch in loader:
        frames += len(batch["clean"])
        if len(batches) < args.steps:
            batches.append(batch)
    loader_fps = frames / (time.perf_counter() - start)
    frames_per_pass = sum(len(b["clean"]) for b in batches)

    warmup = module_from_spec(spec, instantiate(cfg.optimizer), None)
    plain_loop(warmup.net, batches[:3], torch.optim.AdamW(warmup.parameters()), spec.loss.stain_weight)

    torch.manual_seed(0)
    module = module_from_spec(spec, instantiate(cfg.optimizer), None)
    plain_seconds = plain_loop(module.net, batches, instantiate(cfg.optimizer)(module.parameters()),
                               spec.loss.stain_weight)

    torch.manual_seed(0)
    module = module_from_spec(spec, instantiate(cfg.optimizer), None)
    timer = _EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))

    plain_fps, lightning_fps = frames_per_pass / plain_seconds, frames_per_pass / timer.seconds
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"model: {asdict(spec.model)}, batch {spec.dataset.batch_size}, {args.steps} steps")
    print("| measurement | frames/s | ratio |")
    print("|---|---|---|")
    print(f"| plain PyTorch loop | {plain_fps:.1f} | 1.00 |")
    print(f"| Lightning module (Trainer.fit) | {lightning_fps:.1f} | {lightning_fps / plain_fps:.2f} of plain |")
    print(f"| data pipeline alone ({spec.dataset.num_workers} worker(s), decode + stain + batch) | {loader_fps:.1f} "
          f"| {loader_fps / lightning_fps:.1f}x what training consumes |")


if __name__ == "__main__":
    main()
