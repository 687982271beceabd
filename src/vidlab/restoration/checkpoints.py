"""Reading ``train.py``'s checkpoints weights-only (no pickled code runs), upgraded from the vidlab
version that wrote them, and checking one given as ``ckpt_path`` against the config before any MLflow
run is opened or reopened: a checkpoint of another model would otherwise fail only inside
``trainer.fit``, after the run it came from was reopened."""

from __future__ import annotations

import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vidlab import __version__
from vidlab.errors import ConfigError, one_line
from vidlab.files import atomic_path

NOT_RESTORATION = "is not a train.py checkpoint of vidlab's RestorationModule (e.g. outputs/.../checkpoints/best.ckpt)"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _without_targets(node: Any) -> Any:
    """A node without the ``_target_`` keys 0.2 wrote (the registries name the classes now)."""
    if isinstance(node, dict):
        return {k: _without_targets(v) for k, v in node.items() if k != "_target_"}
    return node


def checkpoint_version(saved: dict[str, Any]) -> str:
    """The vidlab that wrote a checkpoint: saved in it since 0.3."""
    return str(saved.get("vidlab_version") or "0.2 or older")


def _upgraded(hparams: dict[str, Any]) -> dict[str, Any]:
    """0.2's (and 0.1's) module arguments as this version's: no ``_target_``; 0.2's blend model learned
    its stain; 0.1 had no stain losses."""
    hparams = _without_targets(hparams)
    if hparams["model"].get("name") == "blend_unet":
        hparams["model"].setdefault("stain", None)
    hparams["loss"] = {"mask_weight": 0.0, "inverse_weight": 0.0, **hparams.get("loss", {})}
    return hparams


def read_checkpoint(path: str | Path, key: str) -> dict[str, Any]:
    """A restoration checkpoint's contents, loaded weights-only, its ``hyper_parameters`` upgraded to
    this version's :class:`~vidlab.restoration.module.RestorationModule` arguments; ``key`` names the
    setting in errors. One written by a newer vidlab is refused."""
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"{key}: checkpoint not found: {path}")
    # torch.save's archive; torch would warn about a raw pickle's protocol before refusing it
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{key}: {path} {NOT_RESTORATION} (not a torch.save archive)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises pickle, zip, EOF, runtime errors for non-checkpoints)
        raise ConfigError(f"{key}: {path} {NOT_RESTORATION} (torch.load, weights only: "
                          f"{type(err).__name__}: {one_line(err)[:200]})") from None
    hparams = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    if not isinstance(hparams, dict) or not {"model", "smoothing"} <= hparams.keys() or "state_dict" not in saved:
        raise ConfigError(f"{key}: {path} {NOT_RESTORATION}")
    written = checkpoint_version(saved)
    if _version(written) > _version(__version__):
        raise ConfigError(f"{key}: {path} was written by vidlab {written}, newer than this vidlab {__version__}: "
                          "upgrade vidlab to load it")
    if "vidlab_version" not in saved:
        saved["hyper_parameters"] = _upgraded(hparams)
    # written before max_stains (0.3): the disc or none
    if saved["hyper_parameters"]["model"].get("name") == "blend_unet":
        saved["hyper_parameters"]["model"].setdefault("max_stains", 0)
    return saved


def _describe(model: dict[str, Any], keys: list[str]) -> str:
    return (f"model={model.get('name')} ({', '.join(f'{k}={model.get(k)}' for k in keys)})" if keys
            else f"model={model.get('name')}")


def check_resume(path: str, model: Any) -> str | None:
    """Check that ``ckpt_path`` is a training checkpoint of the configured ``model`` (its typed
    config): same choice, same architecture. Returns the MLflow run id it was written under."""
    saved = read_checkpoint(path, "ckpt_path")
    if "epoch" not in saved or "optimizer_states" not in saved:
        raise ConfigError(f"ckpt_path: {path} holds weights but no training state "
                          "(a Lightning checkpoint of train.py resumes)")
    wanted, held = asdict(model), saved["hyper_parameters"]["model"]
    differ = sorted(k for k in wanted.keys() | held.keys() if k != "name" and wanted.get(k) != held.get(k))
    if wanted.get("name") != held.get("name") or differ:
        raise ConfigError(f"ckpt_path: {path} was trained as {_describe(held, differ)}, the config asks for "
                          f"{_describe(wanted, differ)}: resume with the checkpoint's model settings, "
                          "or train anew without ckpt_path")
    return saved.get("mlflow_run_id")


def export_weights(checkpoint: str | Path, destination: str | Path) -> Path:
    """Write what restore needs of a train.py checkpoint (model settings and weights, no optimizer
    state: a third of the size) to ``destination``, under a temporary name first."""
    import torch

    saved = read_checkpoint(checkpoint, "checkpoint")
    destination = Path(destination)
    with atomic_path(destination) as partial:
        torch.save({"hyper_parameters": saved["hyper_parameters"], "state_dict": saved["state_dict"],
                    "vidlab_version": __version__}, partial)
    return destination


if __name__ == "__main__":  # python -m vidlab.restoration.checkpoints CHECKPOINT DESTINATION
    import sys

    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m vidlab.restoration.checkpoints CHECKPOINT DESTINATION")
    try:
        print(f"wrote {export_weights(sys.argv[1], sys.argv[2])}")
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
