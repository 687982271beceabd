"""Clip preprocessing in two halves, so the data workers move uint8 and the device does the float math.

``spatial``: uint8 ``(N, C, H, W)`` -> uint8 ``(N, C, h, w)`` (resize, crop), in the loader workers or
on the model's device (``extraction.resize_on``, see :func:`resize_on_device`).
``normalize``: uint8 ``(B, T, C, h, w)`` -> float ``(B, C, T, h, w)`` (scale, mean, std), on the device.

``weights`` (default) is the backbone weights' own ``transforms()``, op for op in the same order
(torchvision resizes the uint8 clip, then converts and normalises); ``notebook`` reproduces the
embedding notebook: squash each frame to ``size`` x ``size`` (OpenCV bilinear), ImageNet mean/std.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as F

from vidlab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    x = x.float().div_(255)
    mean_t = torch.tensor(mean, device=x.device).view(1, 1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 1, -1, 1, 1)
    return ((x - mean_t) / std_t).permute(0, 2, 1, 3, 4)


class WeightsPreprocess:
    # torchvision's tensor ops run on any device; on the CPU the pixels are the same wherever they run
    device_spatial = True

    def __init__(self, weights_enum):
        t = weights_enum.transforms()
        self.resize_size, self.crop_size, self.interpolation = list(t.resize_size), list(t.crop_size), t.interpolation
        self.mean, self.std = tuple(t.mean), tuple(t.std)
        self.description = {"kind": "weights", "weights": str(weights_enum), "resize_size": self.resize_size,
                            "crop_size": self.crop_size, "mean": list(self.mean), "std": list(self.std),
                            "interpolation": str(self.interpolation)}

    def spatial(self, clip: torch.Tensor) -> torch.Tensor:
        clip = F.resize(clip, self.resize_size, interpolation=self.interpolation, antialias=False)
        return F.center_crop(clip, self.crop_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return _normalize(x, self.mean, self.std)


class NotebookPreprocess:
    device_spatial = False  # OpenCV's resize, CPU only: always in the loader workers

    def __init__(self, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.description = {"kind": "notebook", "size": [size, size], "mean": list(mean), "std": list(std),
                            "interpolation": "cv2.INTER_LINEAR (squash, no crop)"}

    def spatial(self, clip: torch.Tensor) -> torch.Tensor:
        frames = clip.permute(0, 2, 3, 1).numpy()
        resized = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_LINEAR) for f in frames])
        return torch.from_numpy(resized).permute(0, 3, 1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return _normalize(x, self.mean, self.std)


def resize_on_device(preprocess: WeightsPreprocess | NotebookPreprocess, resize_on: str, device_type: str) -> bool:
    """Where ``spatial`` runs. ``auto`` puts torchvision's resize on the model's device when that is the
    CPU: the same kernel, so the same bytes (tested), and the workers then only decode and convert
    colour (resizing cost 4x the decoding of a clip on a CPU core, 320x240 to 256 short side). On a GPU
    ``auto`` keeps it in the workers, since CUDA's pixels against the CPU's are not measured yet
    (``benchmarks/extraction.py`` prints them); ``device`` opts in there. OpenCV's resize
    (``preprocess=notebook``) is CPU-only and always runs in the workers."""
    if resize_on == "device" and not preprocess.device_spatial:
        raise ConfigError("extraction.resize_on=device: preprocess=notebook resizes with OpenCV on the CPU; "
                          "use resize_on=auto or workers")
    if resize_on == "auto":
        return preprocess.device_spatial and device_type == "cpu"
    return resize_on == "device"
