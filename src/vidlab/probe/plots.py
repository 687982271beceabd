"""The probe's figures: test ROC, precision-recall and confusion (scikit-learn's curves), and the
per-video anomaly-score curves over time with the annotated ranges shaded, the figure anomaly
detection papers show."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from vidlab.probe import metrics as pm

CURVES_SHOWN = 8  # videos per score-curve figure: the anomalous ones first (most anomalous frames), then normal


def clip_figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Figure]:
    figures = {}
    for name, draw in (
        ("roc.png", lambda ax: RocCurveDisplay.from_predictions(labels, scores, ax=ax, plot_chance_level=True,
                                                                name="probe")),
        ("pr.png", lambda ax: PrecisionRecallDisplay.from_predictions(labels, scores, ax=ax, plot_chance_level=True,
                                                                      name="probe")),
        ("confusion.png", lambda ax: (ConfusionMatrixDisplay.from_predictions(labels, scores >= threshold, ax=ax,
                                                                              colorbar=False,
                                                                              display_labels=["normal", "anomalous"]),
                                      ax.set_title(f"test clips, threshold {threshold:.3f} "
                                                   "(best balanced accuracy on val)"))),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        draw(ax)
        fig.tight_layout()
        figures[name] = fig
    return figures


def score_curves(clips: pd.DataFrame, annotations: dict[str, list[tuple[int, int]]], threshold: float) -> Figure:
    """Frame scores over time of up to CURVES_SHOWN test videos, annotated anomalies shaded."""
    names = {path: Path(path).name for path in clips.path.unique()}
    anomalous_frames = {path: sum(e - s + 1 for s, e in annotations.get(name, [])) for path, name in names.items()}
    labels = clips.groupby("path", sort=False).y.max()
    shown = sorted(names, key=lambda p: (-int(labels[p]), -anomalous_frames[p], p))
    shown = ([p for p in shown if labels[p] == 1][: CURVES_SHOWN // 2 + CURVES_SHOWN % 2]
             + [p for p in shown if labels[p] == 0][: CURVES_SHOWN // 2])
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.6 * len(shown) + 0.6), sharey=True, squeeze=False)
    for ax, path in zip(axes[:, 0], shown):
        group = clips[clips.path == path]
        ax.plot(pm.frame_scores(group, int(group.n_frames.iloc[0])), lw=1.2)
        for start, end in annotations.get(names[path], []):
            ax.axvspan(start, end, color="tab:red", alpha=0.25, lw=0)
        ax.axhline(threshold, color="grey", ls="--", lw=0.8)
        ax.set_title(f"{names[path]} ({'anomalous' if labels[path] else 'normal'})", fontsize=9, loc="left")
        ax.set_ylabel("score")
    axes[-1, 0].set_xlabel("frame (shaded: annotated anomaly; dashed: threshold)")
    fig.tight_layout()
    return fig
