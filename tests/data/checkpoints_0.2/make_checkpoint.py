"""A vidlab 0.2 checkpoint, made by the vidlab on PYTHONPATH (a 0.2 worktree): one real training step of
a tiny RestorationModule saved by Lightning's Trainer, as that commit's
tests/restoration/test_restore.py::save_checkpoint does; then that vidlab's own restoration of a
stained clip (its vidlab.restore.load_module, then restore_clip), added to restored.pt.

    PYTHONPATH=/tmp/v02X/src /work/main/.venv/bin/python make_checkpoint.py FOLDER
        unet|blend_unet_learned|blend_unet_fitted
"""
import functools
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from vidlab.choices import choice_values
from vidlab.restoration.footage import render
from vidlab.restoration.module import RestorationModule
from vidlab.restoration.stains import apply_stain, circular_stain_mask
from vidlab.restore import load_module

MODELS = {
    "unet": {"name": "unet", "context_frames": 1, "depth": 1, "base_channels": 4},
    "blend_unet_learned": {"name": "blend_unet", "window": 4, "context_frames": 3, "depth": 1, "base_channels": 4},
    "blend_unet_fitted": {"name": "blend_unet", "window": 4, "context_frames": 3, "depth": 1, "base_channels": 4,
                          "stain": {**choice_values("corruption", "circular_stain"), "radius": 6}},
}
folder, kind = Path(sys.argv[1]), sys.argv[2]
model = MODELS[kind]
torch.manual_seed(0)
module = RestorationModule(model={**choice_values("model", model["name"]), **model},
                           smoothing=choice_values("smoothing", "masked"),
                           loss=choice_values("task", "restoration")["loss"],
                           optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
g = torch.Generator().manual_seed(0)
frames = model.get("window", model["context_frames"])
batch = {"stained": torch.randint(0, 256, (2, frames, 3, 16, 16), dtype=torch.uint8, generator=g),
         "clean": torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g),
         "mask": torch.rand(2, 1, 16, 16, generator=g)}
if "window" in model:  # a window model scores some frames of each window
    batch["clean"], batch["centres"] = batch["clean"][:, None].repeat(1, 2, 1, 1, 1), torch.tensor([[0, 3], [1, 2]])
trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
trainer.fit(module, DataLoader([batch], batch_size=None))
trainer.save_checkpoint(folder / f"{kind}.ckpt")

# the same stained clip for every version: 6 frames of generated footage (32x32, every other pixel kept), the notebook's
# stain (radius 6) at (9, 7)
stained = apply_stain(render(np.random.default_rng(0), 6, 32, 32)[:, ::2, ::2], circular_stain_mask(16, 16, (9, 7), 6))
clip = torch.from_numpy(stained).permute(0, 3, 1, 2).float() / 255
results = folder / "restored.pt"
saved = torch.load(results, weights_only=True) if results.exists() else {"stained": torch.from_numpy(stained)}
assert torch.equal(saved["stained"], torch.from_numpy(stained))
with torch.no_grad():
    saved[kind] = load_module(folder / f"{kind}.ckpt").restore_clip(clip)
torch.save(saved, results)
print("wrote", folder / f"{kind}.ckpt", "and", results)
