"""Clip preprocessing: uint8 ``(T, C, H, W)`` frames -> float ``(C, T, h, w)`` model input.

``weights`` (default) applies the backbone weights' own ``transforms()``; ``notebook`` reproduces
the embedding notebook: squash each frame to ``size`` x ``size`` (OpenCV bilinear), ImageNet mean/std.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsPreprocess:
    def __init__(self, weights_enum):
        self.transforms = weights_enum.transforms()
        self.description = {"kind": "weights", "weights": str(weights_enum), "crop_size": list(self.transforms.crop_size),
                            "resize_size": list(self.transforms.resize_size), "mean": list(self.transforms.mean),
                            "std": list(self.transforms.std), "interpolation": str(self.transforms.interpolation)}

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return self.transforms(clip)


class NotebookPreprocess:
    def __init__(self, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size = size
        self.mean, self.std = np.array(mean, np.float32), np.array(std, np.float32)
        self.description = {"kind": "notebook", "size": [size, size], "mean": list(mean), "std": list(std),
                            "interpolation": "cv2.INTER_LINEAR (squash, no crop)"}

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        frames = clip.permute(0, 2, 3, 1).numpy()
        resized = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_LINEAR) for f in frames])
        arr = (resized.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(3, 0, 1, 2)))
