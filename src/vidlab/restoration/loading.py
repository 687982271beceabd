"""The restoration model a reference names, ready to restore blind: the model vidlab ships
(:data:`DEFAULT_MODEL`), a train.py checkpoint (a path, or a ``runs:/`` URI of one logged to MLflow)
or a logged MLflow model (``runs:/<id>/model``, ``models:/<name>/<version>``).

torch, Lightning and MLflow are imported where they are used: ``python -m vidlab.restore`` answers
mistakes in paths and formats before them, and restores from a checkpoint file without Lightning
(:func:`load_restoration`: importing Lightning costs about 3 s and 0.28 GB that restoring does not need)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vidlab.errors import ConfigError, one_line

if TYPE_CHECKING:

    from vidlab.restoration.module import RestorationModule
    from vidlab.restoration.nets import RestorationNet
    from vidlab.restoration.smoothing import Smoother

Loaded = TypeVar("Loaded")

MLFLOW_URI_SCHEMES = ("runs:/", "models:/")
DEFAULT_MODEL = Path(__file__).parent / "weights" / "blend_unet.ckpt"
"""The model ``python -m vidlab.restore`` uses without one: ``blend_unet`` trained by
``make default-model``, a few MB."""


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``mlruns.db`` in the current folder when there is one
    (a project run from its folder), else the store of the project this vidlab belongs to."""
    import os

    from vidlab.choices import choice_values, project_root
    from vidlab.tracking import resolve_tracking_uri

    uri = choice_values("logger", "mlflow")["tracking_uri"]
    here = resolve_tracking_uri(uri, Path.cwd())
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return here if Path(here.removeprefix("sqlite:///")).is_file() else resolve_tracking_uri(uri, project_root())


def is_mlflow_uri(reference: str | Path) -> bool:
    """Whether a reference names something in MLflow; asked here, as importing MLflow (vidlab.tracking)
    costs seconds and about 0.1 GB that restoring from a checkpoint file does not need."""
    return str(reference).startswith(MLFLOW_URI_SCHEMES)


class Restoration:
    """What restoring reads of a trained model: its net, in eval mode, on one device, and its smoothing
    (what :class:`~vidlab.restoration.streaming.Restorer` takes, as it takes the training's module)."""

    def __init__(self, net: RestorationNet, smoother: Smoother):
        import torch

        self.net, self.smoother = net.eval(), smoother
        held = next(itertools.chain(net.parameters(), net.buffers()), None)
        self.device = torch.device("cpu") if held is None else held.device

    def to(self, *args: Any, **kwargs: Any) -> Restoration:
        """The net moved as ``torch.nn.Module.to`` moves it (device, memory format); the device kept,
        as a LightningModule keeps it, for a net that holds no tensor too."""
        import torch

        self.net.to(*args, **kwargs)
        device = kwargs.get("device", next((a for a in args if isinstance(a, str | torch.device)), None))
        if device is not None:
            self.device = torch.device(device)
        return self


def load_module(reference: str | Path, tracking_uri: str | None = None) -> RestorationModule:
    """The restoration model of a train.py checkpoint (a path, or a ``runs:/`` URI of one logged to
    MLflow) or of a logged MLflow model (``runs:/<id>/model``, ``models:/<name>/<version>``), on
    the CPU in eval mode. Checkpoints are loaded weights-only (no pickled code runs); an MLflow model
    is a pickled :class:`~vidlab.restoration.module.ClipRestorer`, so only load models from a store
    you trust, as with any pickle."""
    return _load(reference, tracking_uri, _module_of_checkpoint)


def load_restoration(reference: str | Path, tracking_uri: str | None = None) -> Restoration:
    """:func:`load_module`'s model as restoring reads it; a checkpoint's net built from its
    hyperparameters and weights without Lightning (an MLflow model is a pickled module: that needs it).
    Only the checkpoint's ``model`` and ``smoothing`` are read: its training settings (``loss``) are
    not checked, as restoring does not use them."""
    loaded = _load(reference, tracking_uri, _restoration_of_checkpoint)
    return loaded if isinstance(loaded, Restoration) else Restoration(loaded.net, loaded.smoother)


def _load(reference: str | Path, tracking_uri: str | None,
          of_checkpoint: Callable[[str | Path], Loaded]) -> Loaded | RestorationModule:
    """``of_checkpoint`` of a checkpoint file (downloaded first from MLflow when it is a ``runs:/``
    URI of one), or the module an MLflow model pickled."""
    if not is_mlflow_uri(reference):
        return of_checkpoint(reference)
    from vidlab.tracking.models import downloaded, load_pytorch_model

    uri = tracking_uri or default_tracking_uri()
    if str(reference).endswith(".ckpt"):
        with downloaded(str(reference), uri) as path:
            return of_checkpoint(path)
    return _check_restorer(reference, load_pytorch_model(str(reference), uri))


def _check_restorer(reference: str | Path, model: object) -> RestorationModule:
    from vidlab.restoration.module import ClipRestorer

    if not isinstance(model, ClipRestorer):
        raise ConfigError(f"{reference} is a {type(model).__name__}, not a restoration model logged by train.py")
    _check_blind(model.module.model_cfg, reference)
    return model.module.eval()


def _check_blind(model_cfg: Any, reference: str | Path) -> None:
    """Refused unless the model restores without the stain mask (what a user's video lacks)."""
    if getattr(model_cfg, "mask_channel", False):
        raise ConfigError(f"{reference}: this model needs the stain mask as input; "
                          "blind restore needs mask_channel=false")


def _from_checkpoint(checkpoint: str | Path, build: Callable[[dict[str, Any]], Loaded]) -> Loaded:
    """``build`` of a train.py checkpoint's contents, loaded weights-only; what does not fit them (a
    bad hyperparameter, weights of another shape) is refused in one line."""
    from vidlab import __version__
    from vidlab.restoration.checkpoints import NOT_RESTORATION, checkpoint_version, read_checkpoint

    saved = read_checkpoint(checkpoint, "model")
    try:
        return build(saved)
    except (TypeError, ValueError, RuntimeError) as err:  # ConfigError is a ValueError; weights that do not fit
        raise ConfigError(f"model: {checkpoint} {NOT_RESTORATION} (written by vidlab {checkpoint_version(saved)}; "
                          f"this is vidlab {__version__}): {one_line(err)}") from None


def _module_of_checkpoint(checkpoint: str | Path) -> RestorationModule:
    """The training's module of a train.py checkpoint, in eval mode."""
    from vidlab.restoration.module import RestorationModule

    def build(saved: dict[str, Any]) -> RestorationModule:
        module = RestorationModule(**saved["hyper_parameters"])
        module.load_state_dict(saved["state_dict"])
        return module

    module = _from_checkpoint(checkpoint, build)
    _check_blind(module.model_cfg, checkpoint)
    return module.eval()


def _restoration_of_checkpoint(checkpoint: str | Path) -> Restoration:
    """The net and smoothing of a train.py checkpoint, built as the module builds them (the registries'
    configs of its ``model`` and ``smoothing``), its weights the module's ``net.`` ones, loaded strictly."""
    import torch

    from vidlab.restoration.nets import MODELS
    from vidlab.restoration.smoothing import SMOOTHINGS

    def build(saved: dict[str, Any]) -> tuple[Any, Restoration]:
        hparams = saved["hyper_parameters"]
        model_cfg = MODELS.config(hparams["model"])
        net = MODELS.build(model_cfg)
        torch.nn.ModuleDict({"net": net}).load_state_dict(saved["state_dict"])  # the module's keys
        return model_cfg, Restoration(net, SMOOTHINGS.build(SMOOTHINGS.config(hparams["smoothing"])))

    model_cfg, restoration = _from_checkpoint(checkpoint, build)
    _check_blind(model_cfg, checkpoint)
    return restoration
