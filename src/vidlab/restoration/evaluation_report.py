"""``python -m vidlab.restoration.evaluate``'s report: a table per video, the mean over videos of each
output, how many videos each output leaves worse than their stained input, and each model's gap to
the true stain's inverse."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BASELINES = ("true_inverse", "inpaint_telea")  # both read the true stain
COLUMNS = ("video", "size", "output", "uses the true stain", "PSNR in stain (dB)", "content PSNR in stain (dB)",
           "PSNR (dB)")


@dataclass(frozen=True)
class Row:
    video: str
    size: str
    output: str
    true_stain: bool
    psnr_stain: float
    psnr_content_stain: float
    psnr: float


def _table(rows: list[Row]) -> list[str]:
    cells = [[r.video, r.size, r.output, "yes" if r.true_stain else "no",
              *(f"{v:.2f}" for v in (r.psnr_stain, r.psnr_content_stain, r.psnr))] for r in rows]
    return [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)] + [f"| {' | '.join(c)} |" for c in cells]


def _worse(rows: list[Row], output: str) -> int:
    """How many videos ``output`` leaves below their stained input's PSNR in the stain."""
    inputs = {r.video: r.psnr_stain for r in rows if r.output == "input"}
    return sum(r.psnr_stain < inputs[r.video] for r in rows if r.output == output)


def report(rows: list[Row]) -> str:
    """A table per video, then the mean over videos of each output's PSNRs in dB (NaN, a video with no
    content pixel in its stain, left out), then each model's gap to the true inverse in the stain."""
    lines = []
    for video in dict.fromkeys(r.video for r in rows):
        lines += [f"## {video}", "", *_table([r for r in rows if r.video == video]), ""]
    means = []
    for output in dict.fromkeys(r.output for r in rows):
        mine = [r for r in rows if r.output == output]
        mean = [float(np.nanmean(v)) if not np.isnan(v).all() else math.nan
                for v in zip(*[(r.psnr_stain, r.psnr_content_stain, r.psnr) for r in mine])]
        means.append(Row(f"mean over {len(mine)} videos", mine[0].size if len({r.size for r in mine}) == 1 else "mixed",
                         output, mine[0].true_stain, *mean))
    lines += ["## mean over videos (mean of per-video PSNR in dB)", "", *_table(means), ""]
    lines += ["videos that end worse than their input (PSNR in the stain; whole-frame with no stain): "
              + ", ".join(f"{output} {_worse(rows, output)}/{len({r.video for r in rows if r.output == output})}"
                          for output in dict.fromkeys(r.output for r in rows) if output != "input"), ""]
    ceiling = next((m.psnr_stain for m in means if m.output == "true_inverse"), math.nan)
    lines += [f"gap to the ceiling ({m.output}): {ceiling - m.psnr_stain:.2f} dB in stain (true_inverse - model)"
              for m in means if m.output not in ("input", *BASELINES)]
    return "\n".join(lines)
