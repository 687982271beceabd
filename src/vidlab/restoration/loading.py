"""The restoration model a reference names, ready to restore blind: the model vidlab ships
(:data:`DEFAULT_MODEL`), a train.py checkpoint (a path, or a ``runs:/`` URI of one logged to MLflow)
or a logged MLflow model (``runs:/<id>/model``, ``models:/<name>/<version>``).

torch, Lightning and MLflow are imported where they are used: ``python -m vidlab.restore`` answers
mistakes in paths and formats before them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vidlab.errors import ConfigError, one_line

if TYPE_CHECKING:
    from vidlab.restoration.module import RestorationModule

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


def load_module(reference: str | Path, tracking_uri: str | None = None) -> RestorationModule:
    """The restoration model of a train.py checkpoint (a path, or a ``runs:/`` URI of one logged to
    MLflow) or of a logged MLflow model (``runs:/<id>/model``, ``models:/<name>/<version>``), on
    the CPU in eval mode. Checkpoints are loaded weights-only (no pickled code runs); an MLflow model
    is a pickled :class:`~vidlab.restoration.module.ClipRestorer`, so only load models from a store
    you trust, as with any pickle."""
    if not is_mlflow_uri(reference):
        return _load_checkpoint(reference)
    from vidlab.tracking.models import downloaded, load_pytorch_model

    uri = tracking_uri or default_tracking_uri()
    if str(reference).endswith(".ckpt"):
        with downloaded(str(reference), uri) as path:
            return _load_checkpoint(path)
    return _check_restorer(reference, load_pytorch_model(str(reference), uri))


def _check_restorer(reference: str | Path, model: object) -> RestorationModule:
    from vidlab.restoration.module import ClipRestorer

    if not isinstance(model, ClipRestorer):
        raise ConfigError(f"{reference} is a {type(model).__name__}, not a restoration model logged by train.py")
    return _blind(model.module, reference)


def _blind(module: RestorationModule, reference: str | Path) -> RestorationModule:
    """``module`` in eval mode, if it restores without the stain mask (what a user's video lacks)."""
    if getattr(module.model_cfg, "mask_channel", False):
        raise ConfigError(f"{reference}: this model needs the stain mask as input; "
                          "blind restore needs mask_channel=false")
    return module.eval()


def _load_checkpoint(checkpoint: str | Path) -> RestorationModule:
    """The restoration model of a train.py checkpoint, loaded weights-only."""
    from vidlab import __version__
    from vidlab.restoration.checkpoints import NOT_RESTORATION, checkpoint_version, read_checkpoint
    from vidlab.restoration.module import RestorationModule

    saved = read_checkpoint(checkpoint, "model")
    try:
        module = RestorationModule(**saved["hyper_parameters"])
        module.load_state_dict(saved["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:  # ConfigError is a ValueError; weights that do not fit
        raise ConfigError(f"model: {checkpoint} {NOT_RESTORATION} (written by vidlab {checkpoint_version(saved)}; "
                          f"this is vidlab {__version__}): {one_line(err)}") from None
    return _blind(module, checkpoint)
