"""How a job stops on SIGTERM or SIGINT: the signal is recorded, then raised as :class:`Stopped` at
once outside Lightning's loops (and while waiting on a tracking server), as soon as a database call
returns, or at the next batch boundary inside the loops (:class:`vidlab.trainer.StopOnSignal`); and
what the user is told to resume. :func:`vidlab.jobs.run_job` installs :func:`handle` and turns a stop
into its exit code."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived. A KeyboardInterrupt, so Lightning shuts its loops down gracefully
    (``on_exception`` callbacks, loggers, loader workers) as it does for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


received: list[int] = []
_in_loop: list[bool] = []  # inside a Lightning loop that checks for signals at batch boundaries
resume_hint: list[str] = []
resume_path: list[Path] = []  # the checkpoint a stopped training resumes from


def on_stop_say(hint: str) -> None:
    """What the task tells a user whose job was stopped by a signal (how to resume it)."""
    resume_hint[:] = [hint]


def on_stop_resume_from(checkpoint: Path) -> None:
    """A stopped training resumes from ``checkpoint``: the user is told, a requeued Slurm job does it."""
    on_stop_say(f"resume with ckpt_path={checkpoint}")
    resume_path[:] = [checkpoint]


def enter_loop() -> None:
    """A Lightning loop started: a signal now stops the job at the next batch boundary."""
    _in_loop.append(True)


def leave_loop() -> None:
    if _in_loop:
        _in_loop.pop()


def stop_if_signalled() -> None:
    """At a batch boundary: raise :class:`Stopped` if SIGTERM/SIGINT arrived."""
    if received:
        raise Stopped(received[0])


def tracking_call(name: str, *args: object) -> object:
    """``vidlab.tracking.<name>(*args)`` if the job imported it (MLflow), else None: no run can be open
    and no server asked when a config error stopped the job before any work."""
    tracking = sys.modules.get("vidlab.tracking")
    return getattr(tracking, name)(*args) if tracking is not None else None


# where the main thread waits on a tracking server (MLflow's REST store): stopping there cuts nothing
NETWORK_PACKAGES = ("requests", "urllib3", "http.client")
# an exception raised inside these can leave a query unfinished, its lock held by the traceback's frames
# (Python 3.11's sqlite3 keeps a statement open across a rollback): every later write of the process,
# ending its runs, then fails "database is locked" (SQLite) or waits on the row (PostgreSQL)
DATABASE_PACKAGES = ("sqlalchemy", "sqlite3", "alembic", "mlflow.store.db", "mlflow.store.tracking",
                     "mlflow.store.model_registry")
_deferred: list[bool] = []  # a stop waiting for the database call the main thread is in


def _runs_in(frame: FrameType, packages: tuple[str, ...]) -> bool:
    name = frame.f_globals.get("__name__") or ""
    return any(name == package or name.startswith(package + ".") for package in packages)


def _callers(frame: FrameType | None) -> Iterator[FrameType]:
    """``frame``, then its caller, and so on to the outermost frame."""
    while frame is not None:
        yield frame
        frame = frame.f_back


def _waiting_on_network(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller is inside an HTTP request (MLflow's client retrying a server
    that went away waits there for minutes)."""
    return any(_runs_in(caller, NETWORK_PACKAGES) for caller in _callers(frame))


def _database_call(frame: FrameType | None) -> FrameType | None:
    """The frame of the outermost database call ``frame`` is inside (its caller runs no database code),
    or None: not inside one, or waiting on a tracking server over HTTP."""
    if _waiting_on_network(frame):
        return None
    return next((caller for caller in reversed(list(_callers(frame))) if _runs_in(caller, DATABASE_PACKAGES)), None)


def stop_outside_database(frame: FrameType | None, stop: Callable[[], None]) -> None:
    """A signal handler's ``stop()`` (which raises): now, or, when the signal landed inside a database
    call, the moment that call returns. A profile hook on the main thread (``sys.setprofile``: this
    thread only, while the call ends) sees the call's frame return and stops there, in its caller:
    nothing of the call is cut, and no later call can put the stop off."""
    call = _database_call(frame)
    if call is None:
        stop()
        return
    if _deferred:  # a second signal inside the same call: the first one's stop is on its way
        return
    previous = sys.getprofile()

    def on_return(returning: FrameType, event: str, arg: object) -> None:
        if event == "return" and returning is call:
            sys.setprofile(previous)
            _deferred.clear()
            stop()

    _deferred.append(True)
    sys.setprofile(on_return)


def handle(signum: int, frame: FrameType | None) -> None:
    """Outside Lightning's loops, stop at once (Python's own Ctrl-C), or as a database call returns;
    inside them, at the next batch boundary (:class:`vidlab.trainer.StopOnSignal`): an exception raised
    at an arbitrary point can be swallowed (in a fork handler), cut a checkpoint or a row of embeddings in
    half, or keep the store locked. A job waiting on its tracking server stops at once too, and sends
    the server nothing more."""
    received.append(signum)
    if _waiting_on_network(frame):
        tracking_call("fail_fast")
        raise Stopped(signum)
    if not _in_loop:
        def stop() -> None:
            raise Stopped(signum)

        stop_outside_database(frame, stop)


def reset() -> None:
    """A new job: no signal received, no loop entered, nothing to resume from."""
    for state in (received, _in_loop, resume_hint, resume_path, _deferred):
        state.clear()
