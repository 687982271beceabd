"""What a restoration run's test leaves for a person: the per-clip CSV, the comparison table (input,
baselines, the model with each smoothing compared), the side-by-side preview, the per-frame plot, and
the run's description in the MLflow UI; written under the run folder and logged to its MLflow run."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib.figure import Figure

from vidlab import tracking
from vidlab.files import atomic_path, write_text
from vidlab.restoration.config import BASELINES, METRICS, RunSpec
from vidlab.restoration.module import RestorationModule
from vidlab.restoration.panels import side_by_side
from vidlab.restoration.previews import plot_curves, preview_panels
from vidlab.video import write_gif, write_video


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def comparison_table(summary: dict[str, float], model: str, smoothings: list[str],
                     baselines: list[str]) -> list[dict[str, Any]]:
    """One row per output: the stained input, each baseline, the raw model and each compared smoothing."""
    rows = []
    outputs = [("stained input", "stained")] + [(BASELINES[name], f"baseline_{name}") for name in baselines]
    outputs += [(f"{model}, smoothing=none", "raw")]
    outputs += [(f"{model}, smoothing={name}", f"smoothing_{name}") for name in smoothings if name != "none"]
    for label, variant in outputs:
        row: dict[str, Any] = {"output": label}
        for metric in METRICS:
            value = summary.get(f"test/{variant}/{metric}", math.nan)
            row[metric] = round(value, 4)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(rows[0]) + " |"
    rule = "|" + "---|" * len(rows[0])
    body = ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


@dataclass
class TestOutputs:
    """What a test run shows a person: files by artifact folder, figures and stills logged at the
    top level of the run, where MLflow's compare view finds them."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)


def write_test_outputs(module: RestorationModule, spec: RunSpec, output_dir: Path) -> TestOutputs:
    """Per-clip CSV, comparison table, side-by-side GIF and H.264 mp4 (plays in a browser), the
    preview's middle frame and the per-frame PSNR/flicker plot (also saved under ``output_dir/test``)."""
    out = output_dir / "test"
    out.mkdir(parents=True, exist_ok=True)
    outputs = TestOutputs()
    if module.records:
        outputs.files.append(("test", _write_csv(out / "test_clips.csv", module.records)))
        rows = comparison_table(module.test_summary, spec.model.name, spec.top.compare_smoothing,
                                spec.top.compare_baselines)
        outputs.files.append(("test", _write_csv(out / "comparison.csv", rows)))
        md = out / "comparison.md"
        write_text(md, markdown_table(rows))
        outputs.files.append(("test", md))
    if module.preview:
        video = side_by_side(preview_panels(module.preview, spec.smoothing.name), spec.preview.scale)
        fps = getattr(spec.dataset, "fps", 24.0)
        outputs.files.append(("previews", write_gif(out / "preview.gif", video, fps)))
        outputs.files.append(("previews", write_video(out / "preview.mp4", video, fps, codec="h264")))
        outputs.images["preview.png"] = video[len(video) // 2]
        outputs.figures["per_frame.png"] = plot_curves(module.curves)
    return outputs


def log_test_outputs(logger: MLFlowLogger | None, outputs: TestOutputs, output_dir: Path) -> None:
    """Figures saved under ``output_dir/test``; with a logger, everything logged to its run."""
    client, run_id = (logger.experiment, logger.run_id) if logger is not None else (None, None)
    tracking.log_figures(client, run_id, outputs.figures, output_dir / "test")
    if client is not None:
        tracking.log_artifacts(client, run_id, outputs.files)
        for name, image in outputs.images.items():
            with tracking.best_effort(f"image {name}", client, run_id):
                client.log_image(run_id, image, artifact_file=name)


def description(spec: RunSpec, test_summary: dict[str, float], outputs: TestOutputs) -> str:
    """The run's description in the MLflow UI: what was trained on what, how well it restores, where
    to look."""
    text = (f"`{spec.model.name}` restoring `{spec.dataset.name}` stained by `{spec.corruption.name}`, "
            f"smoothing `{spec.smoothing.name}`.")
    psnr = test_summary.get("test/smoothed/psnr_content_stain", math.nan)
    stained = test_summary.get("test/stained/psnr_content_stain", math.nan)
    if math.isfinite(psnr):
        text += f" Test PSNR inside the stain: {psnr:.2f} dB (stained input: {stained:.2f} dB)."
    if outputs.images:
        text += " Preview: `previews/preview.mp4`; per-epoch validation stills: the `val/preview` image."
    return text
