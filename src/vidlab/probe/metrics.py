"""Clip-, video- and frame-level scores of an anomaly probe: scikit-learn's metrics, applied at the
levels the anomaly-detection papers report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score, roc_curve

from vidlab.probe.data import ProbeInputError


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (anomalous when score >= it) with the best balanced accuracy, i.e. the
    ROC point maximising tpr - fpr (Youden's J)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], np.max(scores)))  # roc_curve's first threshold is +inf


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, average precision, and balanced accuracy and F1 at ``threshold`` (anomalous when
    score >= it), of one score per row (a clip, or a video)."""
    predicted = scores >= threshold
    return {"roc_auc": float(roc_auc_score(labels, scores)), "ap": float(average_precision_score(labels, scores)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
            "f1": float(f1_score(labels, predicted, zero_division=0))}


def video_scores(clips: pd.DataFrame) -> pd.DataFrame:
    """One row per video (``path``): its label and its score, the top score of its clips (the
    video-level rule of MIL: a video is as anomalous as its most anomalous part)."""
    return clips.groupby("path", sort=False).agg(y=("y", "max"), score=("score", "max")).reset_index()


def video_level_auc(clips: pd.DataFrame) -> float:
    videos = video_scores(clips)
    return float(roc_auc_score(videos.y, videos.score)) if videos.y.nunique() == 2 else float("nan")


def read_temporal_annotations(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """UCF-Crime's ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``: ``name category s1 e1 s2 e2``
    (frames, inclusive; -1 when absent). Returns the anomalous frame ranges by video file name; a
    file that is not in this format is a one-line error naming the line."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ProbeInputError(f"probe.annotations: cannot read {path} ({str(err).splitlines()[0]})") from None
    ranges = {}
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            bounds = [int(v) for v in parts[2:6]]
        except ValueError:
            bounds = []
        if len(parts) < 6 or len(bounds) != 4 or any(0 <= s and e < s for s, e in zip(bounds[::2], bounds[1::2])):
            raise ProbeInputError(f"probe.annotations: line {number} of {path} is not 'name category start end "
                                  f"start end' (frames, -1 when absent): {line.strip()[:80]!r}")
        ranges[parts[0]] = [(s, e) for s, e in zip(bounds[::2], bounds[1::2]) if s >= 0 and e >= 0]
    if not any(ranges.values()):
        raise ProbeInputError(f"probe.annotations: {path} annotates no anomalous frame")
    return ranges


def frame_scores(clips: pd.DataFrame, n_frames: int) -> np.ndarray:
    """Per-frame score of one video: the mean score of the clips covering the frame; a frame no clip
    covers (the tail shorter than a clip, gaps of a stride longer than the clip) takes the score of
    the last covered frame before it (or the first after it), so every frame counts, as in the
    papers. ``clips`` has ``start_frame``, ``end_frame`` (exclusive) and ``score``."""
    total = np.zeros(n_frames + 1)
    count = np.zeros(n_frames + 1)
    for start, end, score in zip(clips.start_frame, clips.end_frame, clips.score):
        end = min(end, n_frames)
        total[start] += score
        total[end] -= score
        count[start] += 1
        count[end] -= 1
    total, count = np.cumsum(total)[:n_frames], np.cumsum(count)[:n_frames]
    with np.errstate(invalid="ignore", divide="ignore"):
        covered = pd.Series(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return covered.ffill().bfill().to_numpy()


def frame_labels(name: str, n_frames: int, annotations: dict[str, list[tuple[int, int]]]) -> np.ndarray:
    truth = np.zeros(n_frames, bool)
    for start, end in annotations.get(name, []):
        truth[start : end + 1] = True
    return truth


def frame_level_auc(clips: pd.DataFrame, annotations: dict[str, list[tuple[int, int]]]) -> tuple[float, int]:
    """Frame-level ROC-AUC as the papers compute it: every frame of every usable video concatenated.
    ``clips`` has columns ``path``, ``n_frames``, ``start_frame``, ``end_frame``, ``score``, ``y``.
    Usable: the annotated videos, and the normal ones (``y == 0`` on every clip: no anomalous frame,
    listed or not); an anomalous video missing from the annotations is left out. Returns the AUC and
    the number of videos used."""
    labels, scores = [], []
    for path, group in clips.groupby("path", sort=False):
        name = Path(path).name
        if name not in annotations and not (group.y == 0).all():
            continue
        n = int(group.n_frames.iloc[0])
        scores.append(frame_scores(group, n))
        labels.append(frame_labels(name, n, annotations))
    if not labels or len(np.unique(np.concatenate(labels))) < 2:
        return float("nan"), len(labels)
    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores))), len(labels)
