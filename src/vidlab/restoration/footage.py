"""Non-black footage for ``dataset=video_folder`` when no camera footage is at hand (no download here).

Each video is a camera panning and slowly zooming over a natural-looking colour texture (1/f
amplitude spectrum, like photographs), with a few objects moving across it, a lighting drift and
sensor noise, written in several codecs, containers and sizes, as a user's folder would hold:

    python -m vidlab.restoration.footage data/footage --videos 24
    python train.py dataset=video_folder dataset.path=data/footage 'dataset.resize=[72,128]'

Unlike Moving-MNIST, nothing is black: a stain's minimum over a clip is not its offset, so a
restorer must find the stain from the footage itself. ``--digits N`` adds N videos of bouncing
digits (the default dataset's, 72x128 H.264), so that one model learns both worlds (``make
default-model``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from vidlab.restoration.datasets import DATASETS
from vidlab.video import H264Writer, VideoWriter

# (suffix, writer, height, width): H.264 in mp4 and mkv, MPEG-4 part 2 in avi, three sizes
FORMATS = ((".mp4", H264Writer, 72, 128), (".mkv", H264Writer, 90, 160), (".avi", VideoWriter, 108, 192))


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour image with a 1/f amplitude spectrum (float32 ``(H, W, 3)`` in [0, 1])."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(height, width))
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        channels.append(np.fft.irfft2(amplitude * np.exp(1j * phase), s=(height, width)))
    image = np.stack(channels, -1)
    image = image @ rng.uniform(0.2, 1.0, (3, 3))  # correlated channels, as in real colour
    image -= image.min()
    return (0.05 + 0.9 * image / image.max()).astype(np.float32)


def render(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """One video, uint8 ``(frames, height, width, 3)``."""
    scene = texture(rng, 2 * height, 2 * width)
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    velocity = rng.uniform(-1.5, 1.5, 2)
    zoom = rng.uniform(-0.004, 0.004)
    objects = [
        (rng.uniform(0, width, 2) * [1, height / width], rng.uniform(-3, 3, 2), rng.uniform(4, height / 5, 2),
         rng.uniform(0, 1, 3))
        for _ in range(rng.integers(1, 4))
    ]
    light = rng.uniform(0.85, 1.15) + 0.05 * np.sin(np.linspace(0, rng.uniform(0, 2 * np.pi), frames))
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        x0, y0 = start + velocity * t
        scale = 1 + zoom * t
        warp = np.float32([[1 / scale, 0, x0], [0, 1 / scale, y0]])
        frame = cv2.warpAffine(scene, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        for centre, speed, axes, colour in objects:
            cx, cy = centre + speed * t
            cv2.ellipse(frame, (int(cx) % width, int(cy) % height), (int(axes[0]), int(axes[1])), 0, 0, 360,
                        tuple(float(c) for c in colour), -1, cv2.LINE_AA)
        frame = frame * light[t] + rng.normal(0, 1.5 / 255, frame.shape)
        video[t] = np.clip(frame * 255, 0, 255).round().astype(np.uint8)
    return video


def write_footage(folder: str | Path, videos: int, frames: int, fps: float, seed: int, digits: int = 0) -> list[Path]:
    """``videos`` files under ``folder``, cycling through :data:`FORMATS`, and ``digits`` videos of
    bouncing digits; the same seed gives the same pixels."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    # the default data set's
    moving_digits = DATASETS.from_conf("moving_digits", cache_dir=str(folder)).generator(frames)
    for i in range(videos + digits):
        rng = np.random.default_rng([seed, i])
        if i < videos:
            suffix, writer, height, width = FORMATS[i % len(FORMATS)]
            path, pixels = folder / f"scene_{i:03d}{suffix}", render(rng, frames, height, width)
        else:
            writer, path = H264Writer, folder / f"digits_{i - videos:03d}.mp4"
            pixels = moving_digits.render(rng)
        with writer(path, fps) as out:
            for frame in pixels:
                out.write(frame)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits", type=int, default=0, help="also write this many videos of bouncing digits")
    args = parser.parse_args(argv)
    if args.videos < 1 or args.frames < 1 or args.fps <= 0 or args.digits < 0:
        parser.error("--videos and --frames must be >= 1, --digits >= 0 and --fps > 0")
    paths = write_footage(args.folder, args.videos, args.frames, args.fps, args.seed, args.digits)
    print(f"wrote {len(paths)} videos of {args.frames} frames to {args.folder}")


if __name__ == "__main__":
    main()
