"""Real services for ``tests/cluster`` (``make test-cluster``): a PostgreSQL server, MLflow's tracking
server on it started by the docs' own command, and a one-node Slurm cluster. Nothing is installed here:
``.ci/services`` installs Debian's packages (as ``.ci/run`` does); where they are missing, or the tests
do not run as root (PostgreSQL's server refuses root, so it runs as its own user; Slurm's daemons need
root), the tests that need them skip with the reason."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, wait_until_answers

PASSWORD = "vidlab-test-password"
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: Debian's versioned folder (newest), else PATH's."""
    needed = ("initdb", "postgres", "pg_isready", "createdb")
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parts[-2]) if p.parts[-2].isdigit() else 0)
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

    def url(self) -> str:
        return f"postgresql://{self.user}:{PASSWORD}@127.0.0.1:{self.port}/{self.database}"


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
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={folder / 'password'}",
                    "--auth=scram-sha-256", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    server = Postgres(free_port())
    log = open(folder / "postgres.log", "w")
    process = subprocess.Popen([*as_user, str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(server.port),
                                "-k", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    try:
        deadline = time.time() + 60
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(server.port)], capture_output=True).returncode:
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
        self.argv = shlex.split(command.replace("--port 5000", f"--port {self.port}"))
        self.argv[0] = MLFLOW if self.argv[0] == "mlflow" else self.argv[0]
        self.log = folder / f"mlflow-server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_answers(f"{self.uri}/health", self.process, 120, self.log)

    def stop(self) -> None:
        """The server and its workers, at once (a crash or a restart, as the client sees it)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
