"""A shared tracking server (``logger.tracking_uri=http://...``) that is not there, goes away or comes
back: asked before any work, retried within ``logger.server_patience`` seconds, then given up on in one
line. MLflow's client alone retries a refused request for about four minutes with nothing said, and
retries again at every later call (ending the run, system metrics), so a lost server held a training
for many minutes past any signal."""

from __future__ import annotations

import logging
import os

from vidlab.errors import InputError

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 5.0  # seconds a tracking server has to answer before any work starts
MAX_RETRIES = 10  # MLflow refuses more (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)
BACKOFF_MAX = 120.0  # urllib3's longest wait between two tries

# This job's server: its "uri", the seconds a request is retried ("waited"); "fast" once later calls
# must not wait (a signal), "lost" once it stopped answering.
_server: dict[str, object] = {}


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(uri: str) -> None:
    """An ``http(s)://`` store must answer (any HTTP reply) before any work. One :class:`InputError`
    naming it otherwise."""
    if not is_server(uri):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=ANSWER_TIMEOUT)
    except requests.RequestException as err:
        raise InputError(f"logger.tracking_uri: no MLflow server answers at {uri} ({type(err).__name__} within "
                         f"{ANSWER_TIMEOUT:g} s): start it (mlflow server), or log to a sqlite:/// store") from None


def retry_policy(patience: float) -> tuple[int, int, float]:
    """``(retries, backoff factor, seconds waited in all)``: the most waiting that fits in ``patience``,
    then the most retries. urllib3 waits 0 s before the first retry and ``factor * 2**(k - 1)`` s (at most
    ``BACKOFF_MAX``) before the k-th; MLflow takes whole factors and at most ``MAX_RETRIES``."""
    best = (1, 1, 0.0)
    for retries in range(1, MAX_RETRIES + 1):
        for factor in range(1, int(BACKOFF_MAX) + 1):
            waited = float(sum(min(BACKOFF_MAX, factor * 2 ** (k - 1)) for k in range(2, retries + 1)))
            if waited <= patience and (waited, retries) > (best[2], best[0]):
                best = (retries, factor, waited)
    return best


def bound_retries(uri: str, patience: float) -> None:
    """Let MLflow's client retry a request to the server for at most ``patience`` seconds (a server
    restarted within that time loses nothing: the same request goes through), in this process and the
    jobs it starts. A new job starts with the server trusted again."""
    _server.clear()
    if is_server(uri):
        retries, factor, waited = retry_policy(patience)
        _server.update(uri=uri, waited=waited)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(factor)
        os.environ.pop("MLFLOW_HTTP_REQUEST_TIMEOUT", None)  # MLflow's own (120 s) again, after a fail_fast


def fail_fast() -> None:
    """A signal stopped the job: what is still sent (the run's end status) is tried once, briefly,
    not retried for ``logger.server_patience`` seconds."""
    _server["fast"] = True
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"


def failing_fast() -> bool:
    """Whether the job stops without waiting on the server (a signal, or the server is lost)."""
    return bool(_server.get("fast"))


def give_up() -> None:
    """The server stopped answering: nothing more is sent to it (ending the run would wait as long)."""
    if "uri" in _server and not _server.get("lost"):
        _server["lost"] = True
        log.warning("MLflow: the server at %s is not answering: nothing more is sent to it", _server["uri"])
        fail_fast()


def given_up() -> bool:
    return bool(_server.get("lost"))


def is_unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or what it was raised from) is a request that reached no server: refused, reset
    or timed out after its retries, as MLflow's client raises it (an ``MlflowException`` whose context
    is the ``requests`` error)."""
    import requests

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (requests.ConnectionError, requests.Timeout)):
            return True
        err = err.__cause__ or err.__context__
    return False


def lost_line(err: BaseException | None) -> str | None:
    """The one line for a job whose server went away, whether it failed on it (``err``) or went on
    without it (None); None for any other error, or another store."""
    if "uri" not in _server or not (given_up() or (err is not None and is_unreachable(err))):
        return None
    give_up()
    return (f"the MLflow server at {_server['uri']} stopped answering (retried for {_server['waited']:g} s, "
            "logger.server_patience): its run stays RUNNING there until resumed")
