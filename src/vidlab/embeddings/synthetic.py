"""A small UCF-Crime-like tree of generated videos, for the worked example and tests (no download).

Normal videos are slow moving digits; the anomalous categories differ in ways any video backbone,
even randomly initialised, can pick up: ``Flash`` (bright flashes over the scene) and ``Crowd``
(many fast digits).

    python -m vidlab.embeddings.synthetic data/synthetic_ucf [--videos 6] [--frames 96]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vidlab.restoration.digits import MovingDigits
from vidlab.video import write_video

CATEGORIES = {"Normal": (1, 2, (0.5, 1.5)), "Flash": (1, 2, (0.5, 1.5)), "Crowd": (5, 7, (3.0, 5.0))}


def render(category: str, index: int, frames: int, seed: int) -> np.ndarray:
    low, high, speed = CATEGORIES[category]
    rng = np.random.default_rng([seed, list(CATEGORIES).index(category), index])
    video = MovingDigits(120, 160, frames, low, high, 28, speed).render(rng)
    if category == "Flash":
        for t in range(0, frames, 8):
            video[t : t + 3] = np.maximum(video[t : t + 3], 200)
    return video


ANNOTATIONS = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"


def make_tree(root: Path, videos: int = 6, frames: int = 96, seed: int = 0) -> Path:
    """``<root>/Anomaly-Videos/<Flash|Crowd>/`` and ``Training-Normal-Videos`` /
    ``Testing_Normal_Videos`` mp4 files (existing files are kept), and UCF-Crime's temporal
    annotation file: every frame of an anomalous video is anomalous."""
    annotations = []
    for category in CATEGORIES:
        for i in range(videos):
            if category == "Normal":
                folder = "Training-Normal-Videos" if i < videos * 2 // 3 else "Testing_Normal_Videos"
                path = root / folder / f"Normal_Videos{i:03d}_x264.mp4"
                if folder == "Testing_Normal_Videos":
                    annotations.append(f"{path.name}  Normal  -1  -1  -1  -1")
            else:
                path = root / "Anomaly-Videos" / category / f"{category}{i:03d}_x264.mp4"
                annotations.append(f"{path.name}  {category}  0  {frames - 1}  -1  -1")
            if not path.exists():
                write_video(path, render(category, i, frames, seed), fps=30)
    (root / ANNOTATIONS).write_text("\n".join(annotations) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vidlab.embeddings.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--videos", type=int, default=6, help="videos per category")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {make_tree(Path(args.root), args.videos, args.frames, args.seed)}")


if __name__ == "__main__":
    main()
