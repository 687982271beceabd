"""Frozen torchvision video backbones with the classification head replaced by identity.

A choice carries its own preprocessing: the weights' ``transforms()`` (resize, crop, mean, std), so no
backbone gets another's statistics. ``weights`` is ``DEFAULT``, an enum member name, ``None``
(random init: offline tests) or a path to a state_dict file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from vidlab.errors import ConfigError
from vidlab.registry import Registry

if TYPE_CHECKING:  # torch and torchvision are imported where a model is built: checking a config needs neither
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision video model (``torchvision.models.get_model(name)``), as an embedding backbone."""

    head: str             # attribute replaced by nn.Identity
    dim: int              # embedding size once the head is gone
    min_frames: int                # smallest T the architecture accepts (at its own crop size)
    max_frames: int | None = None  # largest T, for fixed temporal position embeddings


@dataclass
class BackboneConfig:
    """``conf/backbone/<name>.yaml``: the backbone, its weights and the frames sampled per clip."""

    name: str
    weights: Optional[str]
    frames_per_clip: int

    def __post_init__(self) -> None:
        check_frames(self.name, self.frames_per_clip)


BACKBONES = Registry("backbone")
"""The backbones ``backbone=<name>`` chooses: a :class:`BackboneSpec` each (read, not built)."""


def add_torchvision(name: str, title: str, spec: BackboneSpec) -> None:
    """Register torchvision's video model ``name`` (a ``conf/backbone/<name>.yaml`` chooses it)."""
    BACKBONES.add(name, spec, BackboneConfig, f"torchvision {name}: {title}, {spec.dim}-d")


add_torchvision("swin3d_t", "Video Swin-T (Kinetics-400)", BackboneSpec("head", 768, 1))
add_torchvision("swin3d_s", "Video Swin-S (Kinetics-400)", BackboneSpec("head", 768, 1))
add_torchvision("swin3d_b", "Video Swin-B (Kinetics-400, or with ImageNet-22k)", BackboneSpec("head", 1024, 1))
add_torchvision("r3d_18", "ResNet3D-18 (Kinetics-400)", BackboneSpec("fc", 512, 1))
add_torchvision("mc3_18", "Mixed-convolution ResNet-18 (Kinetics-400)", BackboneSpec("fc", 512, 1))
add_torchvision("r2plus1d_18", "R(2+1)D-18 (Kinetics-400)", BackboneSpec("fc", 512, 1))
add_torchvision("s3d", "S3D (Kinetics-400)", BackboneSpec("classifier", 1024, 13))
add_torchvision("mvit_v1_b", "MViT-V1-B (Kinetics-400)", BackboneSpec("head", 768, 15, 16))
add_torchvision("mvit_v2_s", "MViT-V2-S (Kinetics-400)", BackboneSpec("head", 768, 15, 16))


def backbone_spec(name: str) -> BackboneSpec:
    """The registered description of backbone ``name`` (a checked config's: any other is a ConfigError)."""
    return BACKBONES[name].target


def weights_enum(name: str, weights: str | None):
    """The weights member that defines preprocessing: the chosen one, or DEFAULT for random/state_dict."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    if weights is None or Path(weights).suffix in (".pt", ".pth", ".bin", ".ckpt") or weights == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        raise ConfigError(f"backbone.weights: {weights!r} is not a weights of {name} (choose DEFAULT, "
                         f"{', '.join(enum.__members__)}, null or a state_dict path)") from None


def check_frames(name: str, frames: int) -> None:
    spec = backbone_spec(name)
    if spec.max_frames is not None and not spec.min_frames <= frames <= spec.max_frames:
        raise ValueError(f"frames_per_clip: {name} takes {spec.min_frames} to {spec.max_frames} frames per clip "
                         f"(got {frames})")
    if frames < spec.min_frames:
        raise ValueError(f"frames_per_clip: {name} needs at least {spec.min_frames} frames per clip (got {frames})")


def load_backbone(name: str, weights: str | None) -> nn.Module:
    """Build the backbone frozen in eval mode with its head removed. ``DEFAULT`` or an enum name
    downloads through torchvision (cached in ``$TORCH_HOME``); a path loads a saved state_dict (with or
    without its head)."""
    import torch
    from torchvision.models import get_model

    spec = backbone_spec(name)
    if weights is not None and Path(weights).suffix in (".pt", ".pth", ".bin", ".ckpt"):
        if not Path(weights).is_file():
            raise ConfigError(f"backbone.weights: state_dict file not found: {weights}")
        model = get_model(name, weights=None)
        setattr(model, spec.head, torch.nn.Identity())
        model.load_state_dict(_read_state_dict(weights, model, spec.head))
    else:
        model = get_model(name, weights=None if weights is None else weights_enum(name, weights))
    setattr(model, spec.head, torch.nn.Identity())
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _read_state_dict(path: str, model: nn.Module, head: str) -> dict:
    """The weights of ``path`` for ``model`` (its head already replaced; a checkpoint's ``state_dict``
    too, the head's weights dropped), read weights-only; anything that is not a state_dict of this
    architecture is one :class:`ConfigError` naming the file."""
    import torch

    from vidlab.errors import one_line

    name = type(model).__name__
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises pickle, zip, EOF, runtime errors for other files)
        raise ConfigError(f"backbone.weights: {path} is not a state_dict file "
                          f"(torch.load, weights only: {one_line(err)[:200]})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"backbone.weights: {path} holds no state_dict (a dict of tensors) for {name}")
    state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    expected = model.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        first = sorted(missing)[:1] or sorted(unexpected)[:1] or wrong[:1]
        raise ConfigError(f"backbone.weights: {path} is not a state_dict of {name} ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors, e.g. {first[0]})")
    return state
