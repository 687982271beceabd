"""The Lightning side of every job: the config's Trainer arguments and optimizer tried before any
work, and the callbacks every Trainer gets (clean stops on signals at batch boundaries, a log line per
epoch). Kept apart from :mod:`vidlab.jobs` because Lightning takes seconds to import."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint
from omegaconf import DictConfig, OmegaConf

from vidlab import stops
from vidlab.errors import ConfigError, one_line
from vidlab.files import remove_stale_temporaries

log = logging.getLogger(__name__)


class StopOnSignal(Callback):
    """Acts on SIGTERM/SIGINT between batches, where checkpoints and written rows are whole."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        stops.enter_loop()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        stops.leave_loop()

    def _check(self, *args: Any) -> None:
        stops.stop_if_signalled()

    on_train_batch_start = on_train_batch_end = _check
    on_validation_batch_start = on_validation_batch_end = _check
    on_test_batch_start = on_test_batch_end = _check
    on_predict_batch_start = on_predict_batch_end = _check


class InterruptedCheckpoint(OnExceptionCheckpoint):
    """Lightning's checkpoint when training stops on an exception (a signal, a lost tracking server),
    ``interrupted.ckpt``, but only where resuming from it skips nothing. Saved after an epoch's last
    training batch and before its validation ended, Lightning resumes from it into the next epoch and
    that epoch is never validated (its metrics missing from the run): there the job says to resume from
    the epoch's start, ``last.ckpt``, which repeats the epoch instead."""

    def __init__(self, folder: Path):
        super().__init__(str(folder), "interrupted")
        self.last = folder / "last.ckpt"

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        batches = trainer.fit_loop.epoch_loop.batch_progress
        validation_pending = trainer.validating or (batches.is_last_batch
                                                    and batches.current.processed >= batches.current.ready)
        if trainer.state.fn == "fit" and validation_pending and self.last.exists():
            stops.on_stop_resume_from(self.last)
            return
        super().on_exception(trainer, pl_module, exception)


class EpochLog(Callback):
    """A log line per epoch and one for the test, with their metrics: the job's log file (Hydra's
    ``train.log``) shows how the job went, which the progress bar only draws on a terminal."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            last = f"/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
            log.info("epoch %d%s: %s", trainer.current_epoch, last, _metrics(trainer.callback_metrics, ("_step",)))

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            log.info("test: %s", _metrics(trainer.callback_metrics))


def _metrics(metrics: dict[str, Any], leave_out: tuple[str, ...] = ()) -> str:
    """``name=value`` for each metric, by name, but those whose name ends with one of ``leave_out``."""
    return " ".join(f"{name}={float(value):.5g}" for name, value in sorted(metrics.items())
                    if not name.endswith(leave_out))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints appear whole under their name or not at all: serialized in memory, written to a
    temporary name beside the target, flushed to disk, then renamed. Lightning writes in place, so a
    full disk left a truncated ``best.ckpt``/``last.ckpt`` and a 0-byte ``interrupted.ckpt`` that a
    resume would then fail on; here a failed write leaves the previous checkpoint as it was and
    raises ``OSError`` (``ENOSPC`` on a full disk), which the job reports in one line."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        import torch

        from vidlab.files import atomic_path

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:  # a failed write() names no file: name the checkpoint
            raise OSError(err.errno, err.strerror, str(path)) from err


def checkpoint_folder(output_dir: Path) -> Path:
    """Where a job's checkpoints go (``<run folder>/checkpoints``), without the half-written temporary
    file a process killed while saving left there (:class:`AtomicCheckpointIO`'s; ``kill -9`` gives it
    no chance to remove it): a rerun of the same folder starts clean."""
    folder = output_dir / "checkpoints"
    for path in remove_stale_temporaries(folder):
        log.info("removed %s, a checkpoint a killed run left half-written", path)
    return folder


def trainer_kwargs(cfg: DictConfig, key: str = "trainer") -> dict[str, Any]:
    """The resolved Trainer arguments of ``cfg[key]`` (unset ones left to Lightning), checked; with
    checkpoints written atomically (:class:`AtomicCheckpointIO`) unless the config brings its plugins."""
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg[key], resolve=True).items() if v is not None}
    kwargs = checked_trainer_args(kwargs, key)
    kwargs.setdefault("plugins", [AtomicCheckpointIO()])
    return kwargs


def checked_trainer_args(kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    """Trainer arguments tried on a throwaway Trainer before any work: a value Lightning would reject
    (``precision=7``, ``devices=0``, ``accelerator=tpu``) is a one-line config error now, not a
    traceback after data and model were built. Building a Trainer touches no file."""
    import lightning as L

    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # the real Trainer says what devices it found
    try:
        trainer = L.Trainer(**kwargs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
    except Exception as err:  # Lightning raises ValueError, TypeError, MisconfigurationException, RuntimeError
        raise ConfigError(f"{key}: {one_line(err)}") from None
    finally:
        lightning_log.setLevel(level)
    _check_cpu_half_precision(trainer, key)
    return kwargs


def _check_cpu_half_precision(trainer: Any, key: str) -> None:
    """Half precision on a CPU without native bfloat16/float16 kernels (no AVX512-BF16/AMX) runs
    convolutions in a reference loop: r3d_18 in bf16-mixed took over 10 minutes for 4 clips that take
    2 s in 32-true on an AVX2 EPYC. That is a setting that cannot work here, so it is refused now."""
    import torch
    from lightning.pytorch.accelerators import CPUAccelerator

    precision = str(trainer.precision)
    if not isinstance(trainer.accelerator, CPUAccelerator) or not precision.startswith(("bf16", "16")):
        return
    native = (torch.ops.mkldnn._is_mkldnn_bf16_supported() if precision.startswith("bf16")
              else torch.ops.mkldnn._is_mkldnn_fp16_supported())
    if not native:
        raise ConfigError(f"{key}.precision={precision}: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no "
                          "native half-precision kernels, convolutions would run hundreds of times slower than "
                          "32-true; use precision=32-true here, or a GPU")


def checked_optimizer(cfg: DictConfig) -> Callable:
    """The optimizer factory, tried on one parameter so ``optimizer.lr=abc`` fails before any work."""
    import torch
    from hydra.utils import instantiate

    try:
        factory = instantiate(cfg.optimizer)
        factory([torch.nn.Parameter(torch.zeros(1))])
    except Exception as err:
        raise ConfigError(f"optimizer: {cfg.optimizer.get('_target_')} rejects {dict(cfg.optimizer)}: "
                          f"{one_line(err)}") from None
    return factory
