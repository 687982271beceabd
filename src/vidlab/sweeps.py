"""Hydra ``-m`` sweeps in MLflow: one parent run per sweep, its jobs as children, a summary at the end
(registered in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import atexit
import hashlib
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from vidlab import jobs, stops
from vidlab.cluster import JOB_TAG, how_slurm_ended
from vidlab.errors import EXIT_INPUT, one_line
from vidlab.registry import build_node
from vidlab.schema import MlflowLoggerConfig
from vidlab.sweep_summary import log_sweep_summary

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def _sweep_logger(config: DictConfig) -> tuple[MlflowLoggerConfig, Path] | None:
    node = config.get("logger")
    if node is None or node.get("name") != "mlflow":
        return None
    resolved = OmegaConf.to_container(node, resolve=True)
    return build_node("logger", MlflowLoggerConfig, resolved), Path(str(config.paths.root)).resolve()


def swept_params(config: DictConfig) -> dict[str, str]:
    """What the sweep varies, as the user wrote it: ``{"model.depth": "2,3", "optimizer.lr":
    "interval(0.0005, 0.005)"}``, from ``hydra.sweeper.params`` and the command line (which wins,
    as it does in Hydra's sweepers)."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    return {o.get_key_element().lstrip("+"): o.input_line.split("=", 1)[1]
            for o in OverridesParser.create().parse_overrides(lines) if o.is_sweep_override()}


def optimized_mode(config: DictConfig) -> str:
    """``max`` or ``min``: the config's ``optimized_mode``, else the sweeper's ``direction``, else max."""
    mode = config.get("optimized_mode")
    if mode in ("max", "min"):
        return mode
    direction = OmegaConf.select(config, "hydra.sweeper.direction")
    return "min" if direction == "minimize" else "max"


class MlflowSweepCallback(HydraCallback):
    """Groups a ``-m`` sweep in MLflow: the store and experiment are prepared once, before any job
    starts (parallel processes creating a fresh SQLite store corrupt it), a parent run is opened with
    the swept parameters as params and every job becomes its child. At the end the parent gets a
    summary CSV (each job's overrides, status, best and final metrics), a plot of the optimized
    metric against each swept parameter, Optuna's ``optimization_results.yaml`` when there is one,
    the best child (``best/<optimized_metric>``, tags ``best_run_id``, ``best_run_name``,
    ``best_overrides``), the ``jobs`` and ``jobs_failed`` counts and an end status: FINISHED,
    FAILED (a job failed, ``vidlab.error`` says which and why) or KILLED (SIGTERM/SIGINT).

    Hydra never calls ``on_multirun_end`` after a failed job (its sweeper raises) or when a job exits
    (a config error, a signal), so the parent is also ended at exit; SIGTERM/SIGINT between jobs stop
    the sweep as they stop a job. The state is plain data: a joblib launcher pickles the callback."""

    def __init__(self) -> None:
        self._uri: str | None = None          # set while this process's sweep has an open parent run
        self._parent = ""
        self._sweep_dir = Path()
        self._metric = ""
        self._mode = "max"
        self._failed: dict[str, str] = {}     # job number -> why it failed
        self._running: str | None = None      # the job started and not yet returned
        self._signal: int | None = None
        self._ending = False
        self._handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        found = _sweep_logger(config)
        if found is None:
            return
        # MLflow and vidlab.tracking (Lightning) only once a sweep needs them: Hydra builds this callback
        # for every run, before a config error could be answered
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        from vidlab.tracking import PARENT_RUN_FILE, ensure_experiment, git_commit, resolve_tracking_uri

        cfg, root = found
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = ensure_experiment(cfg, root, str(config.get("task_name") or "") or None)
        uri = resolve_tracking_uri(cfg.tracking_uri, root)
        client = MlflowClient(uri)
        overrides = " ".join(config.hydra.overrides.task)
        tags = resolve_tags({"sweep_dir": str(sweep_dir),
                             "sweep_id": hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:12],
                             "sweep_overrides": overrides, "vidlab.sweep_parent": "true",
                             "mlflow.note.content": f"Hydra `-m` sweep `{overrides}`: its jobs are the nested runs; "
                                                    "`best/*` and the `best_run_*` tags name the best one."})
        commit = git_commit(root)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        self._sweep_dir, self._metric, self._mode = (sweep_dir, str(config.get("optimized_metric") or ""),
                                                     optimized_mode(config))
        atexit.register(self._end_early)  # both before the parent exists: no moment where it could be left RUNNING
        if threading.current_thread() is threading.main_thread():
            self._handlers = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        run = client.create_run(experiment_id, run_name=f"sweep-{sweep_dir.name}", tags=tags)
        self._uri, self._parent = uri, run.info.run_id
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
        client.log_batch(self._parent,
                         params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in swept_params(config).items()])

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self._uri is not None:  # a job of a sweep this callback opened a parent for (a single run has no job number)
            self._running = str(config.hydra.job.num)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A failed job is seen here: Hydra's sweeper raises only after the whole batch ran."""
        self._running = None
        if self._uri is not None and job_return.status == JobStatus.FAILED:
            # a dataclass field: Hydra's return_value property re-raises it, after a stderr line
            err = job_return._return_value
            self._failed[str(config.hydra.job.num)] = (str(err) if isinstance(err, jobs.JobFailed)
                                                       else f"{type(err).__name__}: {one_line(err)}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep that ran to its end (an Optuna search goes on past failed trials): exit 1 if a job failed."""
        if self._uri is not None:
            failed = self._end(complete=True)
            if failed:
                print(f"error: {len(failed)} of the sweep's jobs failed ({_listed(failed)}); the other jobs ran",
                      file=sys.stderr)
                raise SystemExit(EXIT_INPUT)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT outside a job (a job's own handler stops the job): the sweep exits with
        128 + N, as a stopped job does (as the store call it is in returns); once the parent is being
        ended, that is let finish."""
        if not self._ending:
            stops.stop_outside_database(frame, lambda: self._exit(signum))

    def _exit(self, signum: int) -> None:
        self._signal = signum
        print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
        raise SystemExit(128 + signum)

    def _end_early(self) -> None:
        """At exit, a sweep that never reached ``on_multirun_end``: a failed or stopped job, or a sweeper error."""
        if self._uri is not None:
            self._end(complete=False)

    def _failures(self, children: list[Run]) -> tuple[dict[str, str], bool]:
        """Why each failed job failed, by job number, and whether a job or the sweep was stopped: seen
        by ``on_job_end``, left by a job that exited the process, or on the child runs (jobs of a
        launcher that runs them in other processes)."""
        failed = dict(self._failed)
        stopped = self._signal is not None
        if self._running is not None:
            exited = jobs.last_failure()
            failed[self._running] = exited[1] if exited else "the job did not return"
            stopped |= exited is not None and exited[0] == "KILLED"
        for run in children:
            if run.info.status in ("FAILED", "KILLED"):
                lines = run.data.tags.get("vidlab.error", "").strip().splitlines()
                failed.setdefault(run.data.tags["hydra_job_num"], lines[-1] if lines else run.info.status)
                stopped |= run.info.status == "KILLED"
        return failed, stopped

    def _end(self, complete: bool) -> dict[str, str]:
        """Summary, best child and end status on the parent: KILLED if the sweep or a job was stopped,
        FAILED if a job failed or the sweep did not reach its end, else FINISHED; the status is set
        whatever else fails. Returns why each failed job failed, by job number."""
        from mlflow.tracking import MlflowClient

        self._ending = True
        atexit.unregister(self._end_early)
        client = MlflowClient(self._uri)
        parent, self._uri = self._parent, None
        status, reason, failed = "FAILED", "the sweep's summary could not be written", {}
        try:
            experiment_id = client.get_run(parent).info.experiment_id
            children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
            if self._signal is not None:
                self._end_stopped_children(client, children, f"stopped by {signal.Signals(self._signal).name}")
            self._end_children_slurm_ended(client, children)
            children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
            failed, stopped = self._failures(children)
            reason = _listed(failed)
            if self._signal is not None:
                reason = f"stopped by {signal.Signals(self._signal).name}" + (f"; {reason}" if reason else "")
            status = "KILLED" if stopped else "FAILED" if failed or not complete else "FINISHED"
            if status == "FAILED" and not reason:
                reason = "the sweep stopped before its end"
            log_sweep_summary(client, parent, children, self._metric, self._mode, self._sweep_dir)
            client.log_metric(parent, "jobs", len(children))
            client.log_metric(parent, "jobs_failed", len(failed))
        finally:
            if reason:
                client.set_tag(parent, "vidlab.error", reason[:5000])
            client.set_terminated(parent, status)
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)
        return failed

    @staticmethod
    def _end_stopped_children(client: MlflowClient, children: list[Run], reason: str) -> None:
        """A stopped sweep's jobs that did not end their runs themselves end KILLED: a launcher that
        runs them in other processes (joblib's workers) may end those before a job could, leaving its
        run RUNNING, or FAILED by Lightning's logger with no ``vidlab.error`` (vidlab always says why)."""
        for run in children:
            now = client.get_run(run.info.run_id)
            if now.info.status == "RUNNING" or (now.info.status == "FAILED" and "vidlab.error" not in now.data.tags):
                client.set_tag(run.info.run_id, "vidlab.error", f"{reason} (the sweep was stopped)"[:5000])
                client.set_terminated(run.info.run_id, "KILLED")


    @staticmethod
    def _end_children_slurm_ended(client: MlflowClient, children: list[Run]) -> None:
        """Jobs Slurm ended (``scancel``, preemption, a time limit) were killed before they could end
        their runs: those end as Slurm says (KILLED, or FAILED for a node or memory failure), the reason
        being Slurm's state. Jobs still running end their runs themselves."""
        for run in children:
            job = run.data.tags.get(JOB_TAG)
            if job and run.info.status == "RUNNING":
                ended = how_slurm_ended(job)
                if ended is not None:
                    client.set_tag(run.info.run_id, "vidlab.error", ended[1])
                    client.set_terminated(run.info.run_id, ended[0])


def _listed(failed: dict[str, str]) -> str:
    """``job #0: why; job #3: why``, by job number."""
    return "; ".join(f"job #{num}: {why}" for num, why in sorted(failed.items(), key=lambda item: int(item[0])))
