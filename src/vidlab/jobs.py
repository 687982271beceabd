"""What every ``train.py`` / ``extract.py`` task starts from and ends with: the project root, the
run's output folder, a process that can start loader workers, clean stops on signals, one-line errors
(a traceback for the unexpected ones) and an end status for every MLflow run.

Nothing here imports torch, Lightning or MLflow (seconds each): a config error is answered before them.
The Lightning side of a job (Trainer arguments, callbacks) is :mod:`vidlab.trainer`."""

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
from typing import TypeVar

from omegaconf import DictConfig

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


def enter_loop() -> None:
    """A Lightning loop started: a signal now stops the job at the next batch boundary."""
    _in_loop.append(True)


def leave_loop() -> None:
    if _in_loop:
        _in_loop.pop()


def stop_if_signalled() -> None:
    """At a batch boundary: raise :class:`Stopped` if SIGTERM/SIGINT arrived."""
    if _received:
        raise Stopped(_received[0])


def _end_open_runs(status: str, reason: str | None = None) -> None:
    """End the MLflow runs this process opened; none can be open if :mod:`vidlab.tracking` (MLflow)
    was never imported, as when a config error stops the job before any work."""
    tracking = sys.modules.get("vidlab.tracking")
    if tracking is not None:
        tracking.end_open_runs(status, reason)


def _stop(signum: int, frame: FrameType | None) -> None:
    """Outside Lightning's loops, stop at once (Python's own Ctrl-C); inside them, at the next batch
    boundary (:class:`vidlab.trainer.StopOnSignal`): an exception raised at an arbitrary point can be swallowed
    (in a fork handler) or cut a checkpoint or a row of embeddings in half."""
    _received.append(signum)
    if not _in_loop:
        raise Stopped(signum)


def _report_unexpected(err: BaseException) -> str:
    """The whole traceback as ``error.txt`` beside the job's log and on every run the job left open
    (an artifact), a line in the log; returns its last lines, the runs' ``vidlab.error`` tag. Saving
    it may fail too (the store or the disk may be what broke): that must not hide the error."""
    from hydra.core.hydra_config import HydraConfig

    text = "".join(traceback.format_exception(err))
    try:
        path = Path(HydraConfig.get().runtime.output_dir) / "error.txt"
        path.write_text(text)
        tracking = sys.modules.get("vidlab.tracking")
        for client, run_id in tracking._OPEN_RUNS if tracking is not None else []:
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
            _end_open_runs("KILLED", f"stopped by {name}")
            _failure.append(("KILLED", f"stopped by {name}"))
            hint = _resume_hint[0] if _resume_hint else "what was written is kept"
            print(f"stopped by {name}: {hint}", file=sys.stderr)
            raise SystemExit(128 + _received[0]) from None
        if isinstance(err, SystemExit) and not err.code:
            _end_open_runs("FINISHED")
            raise
        expected = isinstance(err, (ConfigError, InputError, VideoReadError, FileNotFoundError))
        label = "config error" if isinstance(err, ConfigError) else "error"
        _failure.append(("FAILED", f"{label}: {one_line(err)}" if expected else f"{type(err).__name__}: {one_line(err)}"))
        if not expected:
            _end_open_runs("FAILED", _report_unexpected(err))
            raise
        _end_open_runs("FAILED", one_line(err))
        print(f"{label}: {str(err).strip()}", file=sys.stderr)  # one line; a list of bad files follows it
        raise SystemExit(EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_INPUT) from None
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    _end_open_runs("FINISHED")
    return result
