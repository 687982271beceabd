"""Clip- and frame-level scores of an anomaly probe (numpy; ties handled as in the usual definitions)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counting 1/2."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="stable")
    labels, scores = np.asarray(labels)[order].astype(bool), np.asarray(scores)[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp, fp = np.cumsum(labels)[last], np.cumsum(~labels)[last]
    return np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)]


def precision_recall(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    labels, scores = np.asarray(labels)[order].astype(bool), np.asarray(scores)[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp, fp = np.cumsum(labels)[last], np.cumsum(~labels)[last]
    return tp / (tp + fp), tp / max(labels.sum(), 1)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Sum over thresholds of (recall step) x precision."""
    if not np.asarray(labels).astype(bool).any():
        return float("nan")
    precision, recall = precision_recall(labels, scores)
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]``."""
    labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    return np.array([[np.sum(~labels & ~predicted), np.sum(~labels & predicted)],
                     [np.sum(labels & ~predicted), np.sum(labels & predicted)]])


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    (tn, fp), (fn, tp) = confusion(labels, predicted)
    return float((tp / max(tp + fn, 1) + tn / max(tn + fp, 1)) / 2)


def f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    (_, fp), (fn, tp) = confusion(labels, predicted)
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict anomalous when score >= it) with the best balanced accuracy."""
    candidates = np.unique(scores)
    values = [balanced_accuracy(labels, scores >= t) for t in candidates]
    return float(candidates[int(np.argmax(values))])


def read_temporal_annotations(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """UCF-Crime's ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``: ``name category s1 e1 s2 e2``
    (frames, inclusive; -1 when absent). Returns the anomalous frame ranges by video file name."""
    ranges = {}
    for line in Path(path).read_text().splitlines():
        parts = re.split(r"\s+", line.strip())
        if len(parts) < 6:
            continue
        bounds = [int(v) for v in parts[2:6]]
        ranges[parts[0]] = [(s, e) for s, e in zip(bounds[::2], bounds[1::2]) if s >= 0 and e >= 0]
    return ranges


def frame_scores(clips: pd.DataFrame, n_frames: int) -> np.ndarray:
    """Per-frame score: the mean score of every clip covering the frame (NaN where none does).
    ``clips`` has ``start_frame``, ``end_frame`` (exclusive) and ``score``."""
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
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def frame_level_auc(clips: pd.DataFrame, annotations: dict[str, list[tuple[int, int]]]) -> tuple[float, int]:
    """Frame-level ROC-AUC over the videos of ``clips`` (columns ``path``, ``n_frames``,
    ``start_frame``, ``end_frame``, ``score``, ``y``) whose frames are known: the annotated ones, and
    the normal ones (``y == 0`` on every clip: no anomalous frame, listed or not); an anomalous video
    missing from the annotations is left out. Returns the AUC and the number of videos used."""
    labels, scores, videos = [], [], 0
    for path, group in clips.groupby("path"):
        name = Path(path).name
        normal = bool((group.y == 0).all())
        if name not in annotations and not normal:
            continue
        n = int(group.n_frames.iloc[0])
        per_frame = frame_scores(group, n)
        truth = np.zeros(n, bool)
        for start, end in annotations.get(name, []):
            truth[start : end + 1] = True
        covered = ~np.isnan(per_frame)
        labels.append(truth[covered])
        scores.append(per_frame[covered])
        videos += 1
    if not videos:
        return float("nan"), 0
    return roc_auc(np.concatenate(labels), np.concatenate(scores)), videos
