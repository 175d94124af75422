"""Servers for the reliability tests: a throwaway PostgreSQL and an `mlflow server` on top of it.

PostgreSQL comes from the system (`/usr/lib/postgresql/*/bin`); when it is missing and we are root,
`apt-get install postgresql` is tried once; otherwise the tests that need it are skipped. initdb
refuses to run as root, so as root the server runs as the `postgres` user (`runuser`) in a
temporary directory it owns, trusting local connections, listening on 127.0.0.1 at a free port.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving import free_port, stop, wait_until_up
from tests.stores import Store

APT_TIMEOUT_S = 600
SERVER_START_TIMEOUT_S = 180


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no inherited run or experiment, telemetry off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    }
    # One thread each: many processes share the CPU cores, oversubscribing them only slows down.
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _install_postgres() -> str:
    """Try `apt-get install postgresql`; returns why it failed ('' when it worked)."""
    if os.geteuid() != 0:
        return "not root, cannot apt-get install postgresql"
    if shutil.which("apt-get") is None:
        return "no apt-get on this system"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
            if done.returncode != 0:
                return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-500:]}"
    except subprocess.TimeoutExpired:
        return f"apt-get took longer than {APT_TIMEOUT_S} s"
    return ""


@pytest.fixture
def subprocess_env() -> Callable[..., dict[str, str]]:
    """`subprocess_env(NAME=value, ...)`: an environment for the processes a test starts."""
    return child_env


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    database: str

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server with an empty database `mlflow`, stopped at the end of the session."""
    try:
        import psycopg  # noqa: F401  (MLflow's driver for postgresql:// URIs)
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -r requirements-dev.txt)")
    bindir = _postgres_bin()
    if bindir is None:
        why = _install_postgres()
        bindir = _postgres_bin()
        if bindir is None:
            pytest.skip(f"PostgreSQL is not installed and could not be installed: {why}")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root and shutil.which("runuser") is None:
        pytest.skip("running as root without `runuser`: cannot start PostgreSQL as postgres")
    # Not under pytest's tmp dirs: those are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="lv-pg-"))
    if as_root:
        shutil.chown(root, user="postgres", group="postgres")
    data, log = root / "data", root / "server.log"
    port = free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )

    started = False
    try:
        done = run(
            str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
            "-c fsync=off -c max_connections=200"
        )
        done = run(
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"
        )
        started = done.returncode == 0
        assert started, f"pg_ctl start failed:\n{done.stderr}\n" + (
            log.read_text() if log.exists() else ""
        )
        done = run(
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"
        )
        assert done.returncode == 0, f"createdb failed:\n{done.stderr}"
        yield Postgres(host="127.0.0.1", port=port, user="postgres", database="mlflow")
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class TrackingServer:
    url: str
    backend_uri: str
    artifacts: Path
    log: Path


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    """`mlflow server` on the PostgreSQL database (2 workers), artifacts proxied to a temp dir."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts, log = root / "artifacts", root / "server.log"
    env = child_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    # SQLAlchemy's default pool (5 + 10 overflow per worker) is smaller than the 40 request threads
    # of a worker (anyio's default): with eight training processes logging at once on a loaded
    # 2-core machine, requests waited 30 s for a connection and failed ("QueuePool limit reached",
    # seen in CI). 60 per worker covers every thread; 2 workers x 60 stays inside max_connections.
    env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] = "20"
    env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] = "40"
    # Create the schema once, before several server workers open the database.
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", postgres.uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"mlflow db upgrade failed:\n{done.stderr[-3000:]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        postgres.uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    with open(log, "wb") as out:
        # Own process group: the server forks workers, and teardown stops the whole group.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    try:
        wait_until_up(url, proc, log, path="/health", timeout=SERVER_START_TIMEOUT_S)
        yield TrackingServer(url=url, backend_uri=postgres.uri, artifacts=artifacts, log=log)
    finally:
        stop(proc, timeout=30)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """One tracking store shared by every process of a test: a SQLite file (the budget ledger
    beside it) or a REST server (the ledger in a PostgreSQL database of the test's own, named by
    $LV_STORAGE for this process and its children)."""
    if request.param == "postgres":
        pg: Postgres = request.getfixturevalue("postgres")
        name = "ledger_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name.lower())
        monkeypatch.setenv("LV_STORAGE", f"postgresql://{pg.user}@{pg.host}:{pg.port}/{name}")
        return Store("postgres", request.getfixturevalue("mlflow_server").url)
    monkeypatch.delenv("LV_STORAGE", raising=False)
    return Store("sqlite", f"sqlite:///{tmp_path / 'mlflow.db'}")
