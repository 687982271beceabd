"""Restore a stained video with a trained checkpoint (blind: the model finds the stain).

    python -m vidlab.restore CHECKPOINT INPUT OUTPUT [--side-by-side PATH] [--smoothing NAME]

The video is streamed in chunks with a few frames of context on each side, so any length works
and the temporal model and smoothing see neighbours across chunk borders.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vidlab.config import SCHEMAS, build_smoothing_config
from vidlab.restoration.module import RestorationModule, to_uint8
from vidlab.restoration.previews import side_by_side
from vidlab.restoration.smoothing import Smoother, build_smoothing
from vidlab.video import VideoWriter, iter_frames, video_fps

CONTEXT = 4


def _restore_block(module: RestorationModule, smoother: Smoother, frames: list[np.ndarray], device: str) -> np.ndarray:
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(device).float() / 255
    return to_uint8(smoother(module.restore_clip(clip), clip))


def restore_frames(
    module: RestorationModule, smoother: Smoother, frames: Iterator[np.ndarray], chunk: int = 32, device: str = "cpu"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(input, restored)`` uint8 frames in order, holding at most ``chunk + 2 * margin``."""
    margin = module.model_cfg.frames // 2 + CONTEXT
    left: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def emit(core: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        block = left + pending
        restored = _restore_block(module, smoother, block, device)[len(left) : len(left) + core]
        yield from zip(pending[:core], restored)

    for frame in frames:
        pending.append(frame)
        if len(pending) == chunk + margin:
            yield from emit(chunk)
            left = (left + pending[:chunk])[-margin:]
            pending = pending[chunk:]
    if pending:
        yield from emit(len(pending))


def load_module(checkpoint: str | Path, device: str = "cpu") -> RestorationModule:
    module = RestorationModule.load_from_checkpoint(str(checkpoint), map_location=device)
    if module.model_cfg.mask_channel:
        raise ValueError(f"{checkpoint}: this model needs the stain mask as input; blind restore needs mask_channel=false")
    return module.eval().to(device)


def restore_video(
    checkpoint: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    side_by_side_path: str | Path | None = None,
    smoothing: str | None = None,
    chunk: int = 32,
    device: str = "cpu",
) -> int:
    """Write the restored video (and optionally input | restored side by side); returns frames written."""
    module = load_module(checkpoint, device)
    smoother = module.smoother if smoothing is None else build_smoothing(build_smoothing_config(smoothing))
    fps = video_fps(input_path)
    with VideoWriter(output_path, fps) as out, (
        VideoWriter(side_by_side_path, fps) if side_by_side_path else contextlib.nullcontext()
    ) as pair:
        for stained, restored in restore_frames(module, smoother, iter_frames(input_path), chunk, device):
            out.write(restored)
            if pair is not None:
                pair.write(side_by_side({"input": stained[None], "restored": restored[None]}, scale=1)[0])
        return out.frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vidlab.restore", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .ckpt written by train.py (outputs/.../checkpoints/best.ckpt)")
    parser.add_argument("input", help="the video to restore")
    parser.add_argument("output", help="where to write the restored mp4")
    parser.add_argument("--side-by-side", help="also write input | restored to this mp4")
    parser.add_argument("--smoothing", choices=sorted(SCHEMAS["smoothing"]), help="override the checkpoint's smoothing")
    parser.add_argument("--chunk", type=int, default=32, help="frames restored at once")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    n = restore_video(args.checkpoint, args.input, args.output, args.side_by_side, args.smoothing, args.chunk, args.device)
    print(f"restored {n} frames -> {args.output}")


if __name__ == "__main__":
    main()
