"""What every ``train.py`` / ``extract.py`` task starts from and ends with: the project root, the
run's output folder, the Lightning Trainer arguments of the config, a process that can start loader
workers, clean stops on signals, one-line errors (a traceback for the unexpected ones), an end status for
every MLflow run and a log line per epoch."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from vidlab import tracking
from vidlab.errors import EXIT_CONFIG, EXIT_INPUT, ConfigError, InputError, one_line
from vidlab.video import VideoReadError

T = TypeVar("T")

log = logging.getLogger(__name__)

TRACEBACK_LINES = 20  # of an unexpected error's traceback, kept as its runs' ``vidlab.error`` tag


def job_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """``(project root, output folder)``, absolute; the output folder exists."""
    output_dir = Path(cfg.paths.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    return Path(cfg.paths.root).resolve(), output_dir


def allow_worker_processes() -> None:
    """Let a job started by a Hydra launcher start DataLoader workers, as a job run directly does.

    joblib's default (loky) backend sets the global start method to ``"loky"``, which a spawned or
    forkserver child cannot resolve (and a default-context child fails with ``'Process' object has
    no attribute 'env'``); its ``multiprocessing`` backend runs jobs in daemonic pool processes,
    which may not have children. The job process gets the platform's own start method back and is
    marked non-daemonic; its loader workers still exit with it (PyTorch watches the parent).
    """
    if multiprocessing.get_start_method(allow_none=True) not in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
    current = multiprocessing.current_process()
    if current.daemon:
        current.daemon = False


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived. A KeyboardInterrupt, so Lightning shuts its loops down gracefully
    (``on_exception`` callbacks, loggers, loader workers) as it does for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []
_in_loop: list[bool] = []  # inside a Lightning loop that checks for signals at batch boundaries
_resume_hint: list[str] = []
_failure: list[tuple[str, str]] = []  # how the last job ended, when it did not finish


def last_failure() -> tuple[str, str] | None:
    """``(KILLED or FAILED, one line)`` when the last :func:`run_job` of this process was stopped or
    failed, else None: a sweep's parent run reports it, as a job that exits (a config error, a
    signal) never reaches Hydra's ``on_job_end``."""
    return _failure[0] if _failure else None


def on_stop_say(hint: str) -> None:
    """What the task tells a user whose job was stopped by a signal (how to resume it)."""
    _resume_hint[:] = [hint]


def _stop(signum: int, frame: FrameType | None) -> None:
    """Outside Lightning's loops, stop at once (Python's own Ctrl-C); inside them, at the next batch
    boundary (:class:`StopOnSignal`): an exception raised at an arbitrary point can be swallowed
    (in a fork handler) or cut a checkpoint or a row of embeddings in half."""
    _received.append(signum)
    if not _in_loop:
        raise Stopped(signum)


class StopOnSignal(Callback):
    """Acts on SIGTERM/SIGINT between batches, where checkpoints and written rows are whole."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        _in_loop.append(True)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if _in_loop:
            _in_loop.pop()

    def _check(self, *args: Any) -> None:
        if _received:
            raise Stopped(_received[0])

    on_train_batch_start = on_train_batch_end = _check
    on_validation_batch_start = on_validation_batch_end = _check
    on_test_batch_start = on_test_batch_end = _check
    on_predict_batch_start = on_predict_batch_end = _check


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
    return " ".join(f"{name}={float(value):.5g}" for name, value in sorted(metrics.items()) if not name.endswith(leave_out))


def _report_unexpected(err: BaseException) -> str:
    """The whole traceback as ``error.txt`` beside the job's log and on every run the job left open
    (an artifact), a line in the log; returns its last lines, the runs' ``vidlab.error`` tag. Saving
    it may fail too (the store or the disk may be what broke): that must not hide the error."""
    from hydra.core.hydra_config import HydraConfig

    text = "".join(traceback.format_exception(err))
    try:
        path = Path(HydraConfig.get().runtime.output_dir) / "error.txt"
        path.write_text(text)
        for client, run_id in tracking._OPEN_RUNS:
            if client.get_run(run_id).info.status != "FINISHED":
                client.log_artifact(run_id, str(path))
        log.error("failed: %s: %s (traceback in %s)", type(err).__name__, one_line(err), path)
    except Exception as save_err:  # noqa: BLE001 - see above
        log.error("failed: %s: %s (its traceback could not be saved: %s)", type(err).__name__, one_line(err), one_line(save_err))
    return "\n".join(text.strip().splitlines()[-TRACEBACK_LINES:])


def run_job(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a task the way every entry point does: loader workers allowed under any launcher; SIGTERM
    and SIGINT stop it cleanly; expected failures are one line on stderr with their exit code
    (:mod:`vidlab.errors`), unexpected ones keep their traceback, on their MLflow runs too
    (:func:`_report_unexpected`); and every MLflow run it opened ends FINISHED, FAILED or KILLED."""
    allow_worker_processes()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    _received.clear()
    _in_loop.clear()
    _resume_hint.clear()
    _failure.clear()
    try:
        result = task(cfg)
    except BaseException as err:  # noqa: BLE001 - every way out ends the runs, then re-raises or exits
        if _received:  # Lightning turns the interrupt into SystemExit(1): the signal decides the code
            name = signal.Signals(_received[0]).name
            tracking.end_open_runs("KILLED", f"stopped by {name}")
            _failure.append(("KILLED", f"stopped by {name}"))
            hint = _resume_hint[0] if _resume_hint else "what was written is kept"
            print(f"stopped by {name}: {hint}", file=sys.stderr)
            raise SystemExit(128 + _received[0]) from None
        if isinstance(err, SystemExit) and not err.code:
            tracking.end_open_runs("FINISHED")
            raise
        expected = isinstance(err, (ConfigError, InputError, VideoReadError, FileNotFoundError))
        label = "config error" if isinstance(err, ConfigError) else "error"
        _failure.append(("FAILED", f"{label}: {one_line(err)}" if expected else f"{type(err).__name__}: {one_line(err)}"))
        if not expected:
            tracking.end_open_runs("FAILED", _report_unexpected(err))
            raise
        tracking.end_open_runs("FAILED", one_line(err))
        print(f"{label}: {str(err).strip()}", file=sys.stderr)  # one line; a list of bad files follows it
        raise SystemExit(EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_INPUT) from None
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    tracking.end_open_runs("FINISHED")
    return result


def trainer_kwargs(cfg: DictConfig, key: str = "trainer") -> dict[str, Any]:
    """The resolved Trainer arguments of ``cfg[key]`` (unset ones left to Lightning), checked."""
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg[key], resolve=True).items() if v is not None}
    return checked_trainer_args(kwargs, key)


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
        raise ConfigError(f"optimizer: {cfg.optimizer.get('_target_')} rejects {dict(cfg.optimizer)}: {one_line(err)}") from None
    return factory
