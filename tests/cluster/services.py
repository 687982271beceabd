"""Real services for ``tests/cluster`` (``make test-cluster``): a PostgreSQL server, MLflow's tracking
server on it started by the docs' own command, and a one-node Slurm cluster. Nothing is installed here:
``.ci/services`` installs Debian's packages (as ``.ci/run`` does); where they are missing, or the tests
do not run as root (PostgreSQL's server refuses root, so it runs as its own user; Slurm's daemons need
root), the tests that need them skip with the reason."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, wait_until_answers

PASSWORD = "vidlab-test-password"
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: Debian's versioned folder (newest), else PATH's."""
    needed = ("initdb", "postgres", "pg_isready", "createdb")
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parts[-2]) if p.parts[-2].isdigit() else 0)
    found = shutil.which("initdb")
    for folder in [*reversed(debian), *([Path(found).parent] if found else [])]:
        if all((folder / name).is_file() for name in needed):
            return folder
    return None


def _as_postgres_user() -> list[str]:
    """The prefix that runs a PostgreSQL program as the ``postgres`` user when the tests run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a 'postgres' user (PostgreSQL's server refuses root)")
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]  # execs: signals reach the server


@dataclass
class Postgres:
    port: int
    database: str = "mlflow"
    user: str = "mlflow"

    def url(self, database: str | None = None) -> str:
        return f"postgresql://{self.user}:{PASSWORD}@127.0.0.1:{self.port}/{database or self.database}"

    def create_database(self, name: str) -> None:
        """A database the lab's admin would make for a service (``CREATE DATABASE ... OWNER mlflow``)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}" OWNER {self.user}')


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server on a free loopback port, with a database ``mlflow`` owned by a user
    ``mlflow`` who logs in with a password (scram-sha-256), as a lab's database would be set up."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server is not installed (.ci/services installs Debian's postgresql)")
    as_user = _as_postgres_user()
    folder = Path(tempfile.mkdtemp(prefix="vidlab-postgres-"))  # outside pytest's root-only temporary folders
    (folder / "password").write_text(PASSWORD)
    if as_user:
        account = pwd.getpwnam("postgres")
        for path in (folder, folder / "password"):
            os.chown(path, account.pw_uid, account.pw_gid)
    data = folder / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow",
                    f"--pwfile={folder / 'password'}", "--auth=scram-sha-256", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    server = Postgres(free_port())
    log = open(folder / "postgres.log", "w")
    process = subprocess.Popen([*as_user, str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                "-p", str(server.port), "-k", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    try:
        deadline = time.time() + 60
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(server.port)],
                             capture_output=True).returncode:
            assert process.poll() is None and time.time() < deadline, (folder / "postgres.log").read_text()[-3000:]
            time.sleep(0.3)
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "mlflow", "mlflow"],
                       check=True, env=env, timeout=60)
        yield server
    finally:
        process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        process.wait(timeout=60)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


class TrackingServer:
    """``mlflow server`` started by a command as the docs write it, on the given backend and
    artifact folder; stopped and started again on the same port, as a restart would."""

    def __init__(self, command: str, folder: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        words = shlex.split(command.replace("--port 5000", f"--port {self.port}"))
        self.env = dict(os.environ)
        while "=" in words[0]:  # VAR=value before the program, as a shell takes it
            name, _, value = words.pop(0).partition("=")
            self.env[name] = value
        self.argv = [MLFLOW if words[0] == "mlflow" else words[0], *words[1:]]
        self.log = folder / f"mlflow-server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=self.env)
        wait_until_answers(f"{self.uri}/health", self.process, 120, self.log)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server gone for the block, started again on the same port after it, whatever happens."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def stop(self) -> None:
        """The server and its workers, at once (a crash or a restart, as the client sees it)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sinfo", "scancel", "squeue", "sacct",
                  "mariadb-install-db", "mariadbd", "mariadb")


def _program(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None)


@dataclass
class Slurm:
    """A running one-node cluster: its config (``SLURM_CONF``) and partition."""

    conf: Path
    partition: str = "cpu"

    def env(self) -> dict[str, str]:
        """The environment a user's shell on the cluster has: its Slurm config, vidlab's quiet warnings."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}

    def run(self, *command: str) -> str:
        return subprocess.run(command, env=self.env(), capture_output=True, text=True, check=True, timeout=60).stdout

    def ended(self, process: subprocess.Popen, seconds: float, logs: Path) -> tuple[str, str]:
        """``process``'s stdout and stderr once it ends within ``seconds``; past them it is killed and the
        test fails with what explains a stuck job: the queue (each job's state and why it waits) and the
        tail of each job's log under ``logs``."""
        try:
            return process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            tails = "".join(f"\n== {p}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.rglob("*_log.*")))
            queue = self.run("squeue", "-h", "-o", "%i %T %M %R")
            raise AssertionError(f"still running after {seconds:.0f} s; the queue:\n{queue}{tails}") from None

    def cancel_all(self) -> None:
        """Every job cancelled, and the node free again: a test's stuck job never holds it for the next."""
        subprocess.run([_program("scancel"), "--full", "--user=root"], env=self.env(), capture_output=True, timeout=60)
        _wait_for(lambda: not self.run("squeue", "-h", "-o", "%i").split(), 120,
                  f"jobs still queued: {self.run('squeue', '-h')}")


SLURM_CONF = """\
ClusterName=vidlab
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.socket
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
AccountingStoragePass={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

SLURMDBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.socket
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
PidFile={folder}/slurmdbd.pid
LogFile={folder}/slurmdbd.log
"""


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A real one-node Slurm cluster on this machine (its cores, half its memory) with its accounting:
    munged with a socket of its own, MariaDB and slurmdbd, slurmctld and slurmd, each with its state
    and logs in a temporary folder and ``SLURM_CONF`` pointing at its config, so nothing of the
    machine's is written over. Root, as Slurm's daemons need (CI runs as root)."""
    missing = [name for name in SLURM_PROGRAMS if _program(name) is None]
    if missing:
        pytest.skip(f"Slurm is not installed (missing {', '.join(missing)}; .ci/services installs slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("a Slurm cluster's daemons need root (CI runs as root)")
    try:
        munge_user = pwd.getpwnam("munge")
        pwd.getpwnam("mysql")
    except KeyError as err:
        pytest.skip(f"no {err} user (Debian's munge and mariadb-server packages make them)")
    folder = Path(tempfile.mkdtemp(prefix="vidlab-slurm-"))
    for sub in ("state", "spool", "munge", "db"):
        (folder / sub).mkdir()
    os.chown(folder / "munge", munge_user.pw_uid, munge_user.pw_gid)
    mysql_user = pwd.getpwnam("mysql")
    os.chown(folder / "db", mysql_user.pw_uid, mysql_user.pw_gid)
    os.chmod(folder, 0o755)
    ports = {"ctld_port": free_port(), "d_port": free_port(), "dbd_port": free_port(), "db_port": free_port()}
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 2
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(
        host=subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip(),
        folder=folder, cpus=os.cpu_count(), memory=memory, **ports))
    (folder / "slurmdbd.conf").write_text(SLURMDBD_CONF.format(folder=folder, password=PASSWORD, **ports))
    os.chmod(folder / "slurmdbd.conf", 0o600)  # slurmdbd refuses a config others may read
    cluster = Slurm(conf)
    munge, db = folder / "munge", folder / "db"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    daemons = [subprocess.Popen(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "--", _program("munged"),
                                 "-F", f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid",
                                 f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"], **quiet)]
    try:
        # the accounting database (sacct: how each job ended, which submitit asks): MariaDB, then slurmdbd on it
        subprocess.run([_program("mariadb-install-db"), "--user=mysql", f"--datadir={db}/data",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        daemons.append(subprocess.Popen([_program("mariadbd"), "--user=mysql", f"--datadir={db}/data",
                                         f"--socket={db}/mariadb.sock", f"--port={ports['db_port']}",
                                         "--bind-address=127.0.0.1", f"--pid-file={db}/mariadb.pid",
                                         f"--log-error={db}/mariadb.log", "--skip-log-bin"], **quiet))
        _wait_for(lambda: (db / "mariadb.sock").exists() and (munge / "munge.socket").exists(), 60,
                  "mariadbd or munged did not start")
        subprocess.run([_program("mariadb"), f"--socket={db}/mariadb.sock", "-u", "root", "-e",
                        f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
                        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"],
                       check=True, capture_output=True, timeout=60)
        # its config beside SLURM_CONF
        daemons.append(subprocess.Popen([_program("slurmdbd"), "-D"], env=cluster.env(), **quiet))
        # listening, not only started: its pid file comes before it has made its database (the first
        # time, seconds), and a slurmctld that cannot reach it with no state files exits at once
        _wait_for(lambda: _listening(ports["dbd_port"]), 120, "slurmdbd did not start listening")
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([_program(daemon), "-D"], env=cluster.env(), **quiet))
        # slurmctld exits where it cannot start: then the message quotes both daemons' logs
        _wait_for(lambda: subprocess.run([_program("sinfo"), "-h", "-o", "%t"], env=cluster.env(), capture_output=True,
                                         text=True).stdout.strip() == "idle", 120,
                  lambda: "the node did not come up: " + "".join(
                      f"\n{name} (exit {process.poll()}): {(folder / name).read_text()[-1500:]}"
                      for name, process in zip(("slurmctld.log", "slurmd.log"), daemons[-2:])
                      if (folder / name).exists()))
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.cancel_all()
        for process in reversed(daemons):
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _wait_for(ready: Callable[[], bool], seconds: float, message: str | Callable[[], str]) -> None:
    """Wait until ``ready()``; past ``seconds``, fail with ``message`` (a callable: made then, when the
    logs it quotes are written)."""
    deadline = time.time() + seconds
    while not ready():
        assert time.time() < deadline, message() if callable(message) else message
        time.sleep(0.5)
