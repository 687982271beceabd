"""What every ``train.py`` / ``extract.py`` task starts from and ends with: the project root, the
run's output folder, a process that can start loader workers, clean stops on signals (recorded by
:mod:`vidlab.stops`), one-line errors (a traceback for the unexpected ones) and an end status for every
MLflow run.

Nothing here imports torch, Lightning or MLflow (seconds each): a config error is answered before them.
The Lightning side of a job (Trainer arguments, callbacks) is :mod:`vidlab.trainer`."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig

from vidlab import preemption, stops
from vidlab.errors import EXIT_CONFIG, EXIT_INPUT, ConfigError, InputError, hydra_error_line, no_space_left, one_line
from vidlab.stops import tracking_call
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


class JobFailed(Exception):
    """A job of a ``-m`` sweep failed (its one line already said why): an ``Exception``, not an exit,
    so Hydra records the job FAILED and its launcher goes on to the next job (an Optuna sweeper tells
    Optuna the trial failed); :func:`main` turns it into the sweep's exit code at the end. Its
    message is that line."""


_failure: list[tuple[str, str]] = []  # how the last job ended, when it did not finish


def last_failure() -> tuple[str, str] | None:
    """``(KILLED or FAILED, one line)`` when the last :func:`run_job` of this process was stopped or
    failed, else None: a sweep's parent run reports it, as a job that exits (a config error, a
    signal) never reaches Hydra's ``on_job_end``."""
    return _failure[0] if _failure else None


def _end_open_runs(status: str, reason: str | None = None) -> None:
    """End the MLflow runs this process opened."""
    tracking_call("end_open_runs", status, reason)


def _report_unexpected(err: BaseException) -> str:
    """The whole traceback as ``error.txt`` beside the job's log and on every run the job left open
    (an artifact), a line in the log; returns its last lines, the runs' ``vidlab.error`` tag. Saving
    it may fail too (the store or the disk may be what broke): that must not hide the error."""
    from hydra.core.hydra_config import HydraConfig

    text = "".join(traceback.format_exception(err))
    try:
        path = Path(HydraConfig.get().runtime.output_dir) / "error.txt"
        path.write_text(text)
        for client, run_id in tracking_call("open_runs") or []:
            if client.get_run(run_id).info.status != "FINISHED":
                client.log_artifact(run_id, str(path))
        log.error("failed: %s: %s (traceback in %s)", type(err).__name__, one_line(err), path)
    except Exception as save_err:  # noqa: BLE001 - see above
        log.error("failed: %s: %s (its traceback could not be saved: %s)", type(err).__name__, one_line(err),
                  one_line(save_err))
    return "\n".join(text.strip().splitlines()[-TRACEBACK_LINES:])


def _in_sweep() -> bool:
    """Whether this job is one of a Hydra ``-m`` sweep (then a failure must not end the sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a task the way every entry point does: loader workers allowed under any launcher; SIGTERM
    and SIGINT stop it cleanly; expected failures are one line on stderr with their exit code
    (:mod:`vidlab.errors`; in a ``-m`` sweep, :class:`JobFailed`, so the sweep goes on), unexpected
    ones keep their traceback, on their MLflow runs too (:func:`_report_unexpected`); and every
    MLflow run it opened ends FINISHED, FAILED or KILLED."""
    allow_worker_processes()
    handlers, requeue = {}, None
    if threading.current_thread() is threading.main_thread():
        requeue = preemption.submitit_handler()
        caught = (signal.SIGTERM, signal.SIGINT, *((preemption.REQUEUE_SIGNAL,) if requeue else ()))
        handlers = {s: signal.signal(s, stops.handle) for s in caught}
    stops.reset()
    _failure.clear()
    try:
        result = task(cfg)
        server_lost = tracking_call("lost_line", None)
        if server_lost:  # what only shows the run in the UI did not reach it
            raise InputError(server_lost)
    except BaseException as err:  # noqa: BLE001 - every way out ends the runs, then re-raises or exits
        _exit_if_stopped(requeue)
        if isinstance(err, SystemExit) and not err.code:
            _end_open_runs("FINISHED")
            raise
        _exit_if_expected(err)
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    _end_open_runs("FINISHED")
    return result


def _exit_if_stopped(requeue: Callable | None) -> None:
    """When a signal stopped the job: a requeue signal hands over to submitit (:func:`_requeue`);
    otherwise its runs end KILLED, the user is told how to resume, and the exit code is ``128 + N``
    (Lightning turns the interrupt into SystemExit(1): the signal decides the code)."""
    if not stops.received:
        return
    if requeue is not None and stops.received[0] == preemption.REQUEUE_SIGNAL:
        _requeue(requeue)
    name = signal.Signals(stops.received[0]).name
    _end_open_runs("KILLED", f"stopped by {name}")
    _failure.append(("KILLED", f"stopped by {name}"))
    hint = stops.resume_hint[0] if stops.resume_hint else "what was written is kept"
    print(f"stopped by {name}: {hint}", file=sys.stderr)
    raise SystemExit(128 + stops.received[0]) from None


def _exit_if_expected(err: BaseException) -> None:
    """An expected failure (a refusal, a full disk, a tracking server gone) ends the runs FAILED with
    its one line on stderr and exits with its code, or raises :class:`JobFailed` in a sweep; an
    unexpected one ends them FAILED with its traceback (:func:`_report_unexpected`) and returns, for
    the caller to re-raise it."""
    full = no_space_left(err)
    if full is not None:
        err = InputError(f"no space left on {full}: free some space and run the same command again")
    server_lost = tracking_call("lost_line", err)
    if server_lost:
        hint = f"; once it answers, {stops.resume_hint[0]}" if stops.resume_hint else ""
        err = InputError(f"{server_lost}{hint}")
    expected = isinstance(err, (ConfigError, InputError, VideoReadError, FileNotFoundError))
    label = "config error" if isinstance(err, ConfigError) else "error"
    _failure.append(("FAILED", f"{label}: {one_line(err)}" if expected else f"{type(err).__name__}: {one_line(err)}"))
    if not expected:
        _end_open_runs("FAILED", _report_unexpected(err))
        with contextlib.suppress(AttributeError):  # an exception type without a __dict__
            # an OmegaConf error of a job is a bug, not a refusal of the command line (kept when pickled)
            err.raised_by_job = True
        return
    _end_open_runs("FAILED", one_line(err))
    print(f"{label}: {str(err).strip()}", file=sys.stderr)  # one line; a list of bad files follows it
    if _in_sweep():
        raise JobFailed(f"{label}: {one_line(err)}") from None
    raise SystemExit(EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_INPUT) from None


def _requeue(submitit_requeue: Callable) -> None:
    """Preempted, or near its time limit: the training stopped at a batch boundary with its checkpoint.
    Its runs stay RUNNING for the requeued job to continue, then submitit requeues the job and exits
    (rank 0; the other ranks exit here). Where submitit will not requeue (a time limit reached more often
    than ``hydra.launcher.max_num_timeout`` allows), the runs end KILLED and its error goes on to it."""
    signum = stops.received[0]
    name = signal.Signals(signum).name
    if stops.resume_path:
        preemption.record_resume_point(stops.resume_path[0])
    where = f"resumes from {stops.resume_path[0]}" if stops.resume_path else "reruns"
    tracking_call("mark_open_runs_requeued", f"preempted by Slurm ({name}): requeued, {where}")
    try:
        submitit_requeue(signum, None)
    except SystemExit:
        tracking_call("forget_open_runs")
        print(f"preempted by Slurm: requeued, {where}", file=sys.stderr)
        raise
    except Exception as err:
        reason = f"stopped by Slurm ({name}), not requeued: {one_line(err)}"
        _end_open_runs("KILLED", reason)
        _failure.append(("KILLED", reason))
        print(reason, file=sys.stderr)
        raise
    tracking_call("forget_open_runs")
    raise SystemExit(128 + signum)


def main(hydra_main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point (``train.py``, ``extract.py``) with the project's exit
    codes: Hydra's own refusals (and a run folder it cannot make) are one line and exit 2 (Hydra
    prints several lines and exits 1), and a ``-m`` sweep whose jobs failed (each said why, the
    others ran) exits 1 naming one of them."""
    import os

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    full_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user asked Hydra for whole tracebacks
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
    try:
        hydra_main()
    except JobFailed as err:
        print(f"error: a job of the sweep failed ({err}); the other jobs ran", file=sys.stderr)
        raise SystemExit(EXIT_INPUT) from None
    except (HydraException, OmegaConfBaseException, OSError) as err:
        if getattr(err, "raised_by_job", False) or full_traces:
            raise
        if isinstance(err, (HydraException, OmegaConfBaseException)):  # MissingConfigException is an OSError too
            line = hydra_error_line(err)
        else:  # Hydra makes the run folder before the job starts
            line = (f"cannot create {err.filename or 'the run folder'}: {err.strerror or one_line(err)} "
                    "(see paths.root and hydra.run.dir)")
        print(f"config error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
