"""How a job stops on SIGTERM or SIGINT: the signal is recorded, then raised as :class:`Stopped` at
once outside Lightning's loops (and while waiting on a tracking server), as soon as a database call
returns, or at the next batch boundary inside the loops (:class:`vidlab.trainer.StopOnSignal`); and
what the user is told to resume. :func:`vidlab.jobs.run_job` installs :func:`handle` and turns a stop
into its exit code."""

from __future__ import annotations

import signal
import sys
import threading
import time
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


NETWORK_MODULES = ("/requests/", "/urllib3/", "/http/client.py", "/socket.py")
# an exception raised in these can leave a SQLite statement unfinished, its read lock held by the
# traceback's frames: every later write of the process (ending its runs) then fails "database is locked"
DATABASE_MODULES = ("/sqlalchemy/", "/sqlite3/", "/alembic/", "/mlflow/store/")


def _inside(frame: FrameType | None, modules: tuple[str, ...]) -> bool:
    """Whether ``frame`` or one of its callers runs code of ``modules`` (parts of file paths)."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in modules):
            return True
        frame = frame.f_back
    return False


def _in_database_call(frame: FrameType | None) -> bool:
    """Inside a database call, and not waiting on a tracking server (MLflow's REST store), where
    stopping at once cuts nothing."""
    return _inside(frame, DATABASE_MODULES) and not _inside(frame, NETWORK_MODULES)


def deferred_for_database(signum: int, frame: FrameType | None) -> bool:
    """Whether a signal handler that stops at once must wait, because ``signum`` landed inside a
    database call: then a thread watches the main thread leave the call and sends it ``signum`` again
    (a real signal, which wakes a blocking wait; not once no Python handler is left), for the handler
    installed then to decide again."""
    if not _in_database_call(frame):
        return False
    main = threading.main_thread()

    def deliver_when_out() -> None:
        while main.is_alive():
            now = sys._current_frames().get(main.ident)
            if now is None or not _in_database_call(now):
                if callable(signal.getsignal(signum)):
                    signal.pthread_kill(main.ident, signum)
                return
            time.sleep(0.005)

    threading.Thread(target=deliver_when_out, name="vidlab-stop-after-database", daemon=True).start()
    return True


def handle(signum: int, frame: FrameType | None) -> None:
    """Outside Lightning's loops, stop at once (Python's own Ctrl-C), or when a database call returns;
    inside them, at the next batch boundary (:class:`vidlab.trainer.StopOnSignal`): an exception raised
    at an arbitrary point can be swallowed (in a fork handler), cut a checkpoint or a row of embeddings in
    half, or hold the store's lock. A job waiting on its tracking server stops at once too, and sends the
    server nothing more."""
    if signum not in received:  # delivered again after a database call: the same stop
        received.append(signum)
    if _inside(frame, NETWORK_MODULES):
        tracking_call("fail_fast")
        raise Stopped(signum)
    if not _in_loop and not deferred_for_database(signum, frame):
        raise Stopped(signum)


def reset() -> None:
    """A new job: no signal received, no loop entered, nothing to resume from."""
    for state in (received, _in_loop, resume_hint, resume_path):
        state.clear()
