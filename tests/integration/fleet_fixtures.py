"""Fixtures for the fleet tests, used as a plugin (``pytest_plugins = ["tests.integration.fleet_fixtures"]``):
throwaway PostgreSQL databases and clusters, Redis key spaces and servers, and real worker processes.
Each test gets its own database and queue and removes them.

The shared servers (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379) are never flushed or
restarted: tests that restart a server start an ephemeral one of their own. Where a server or its
binaries are missing, the tests fail saying how to get them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from redis import Redis

from stampede.db import upgrade
from stampede.processes import free_port
from stampede.settings import get_settings
from tests.integration.fleet_helpers import create_database, drop_database, wait_until

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
# Debian's layout; the newest installed major version.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/nonexistent"))
REDIS_SERVER = Path("/usr/bin/redis-server")
HOW_TO_GET = (
    "apt-get install postgresql redis-server, then start both (service postgresql start; service redis-server start)"
)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_pg() -> str:
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg.OperationalError:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 as user postgres; {HOW_TO_GET}")
    return PG_ADMIN


@pytest.fixture
def empty_pg(shared_pg: str) -> Iterator[str]:
    """A fresh database without tables on the shared server, dropped afterwards."""
    name = create_database(shared_pg)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_database(shared_pg, name)


@pytest.fixture
def pg_url(empty_pg: str) -> str:
    """A fresh, migrated database on the shared server, dropped afterwards."""
    upgrade(empty_pg)
    return empty_pg


@pytest.fixture
def pg_store(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``pg_url``, made this process's configured store (STAMPEDE_DATABASE_URL) for the test."""
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", pg_url)
    get_settings.cache_clear()
    yield pg_url
    get_settings.cache_clear()


def _remove_queue_keys(connection: Redis, queue_name: str) -> None:
    # Our job ids, worker names and RQ's registries all contain the queue name.
    for key in connection.scan_iter(match=f"*{queue_name}*", count=1000):
        connection.delete(key)
    for worker_key in connection.smembers("rq:workers"):
        if queue_name.encode() in worker_key:
            connection.srem("rq:workers", worker_key)


@pytest.fixture
def queue_name() -> str:
    return f"stampede-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def shared_redis(queue_name: str) -> Iterator[str]:
    """The shared Redis, with this test's keys (those naming its queue) removed afterwards."""
    connection = Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        connection.ping()
    except Exception:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379; {HOW_TO_GET}")
    try:
        yield REDIS_URL
    finally:
        _remove_queue_keys(connection, queue_name)
        connection.close()


@dataclass
class EphemeralRedis:
    """A redis-server of this test's own, on a free port and with a password, that the test may stop and start."""

    directory: Path
    password: str = field(default_factory=lambda: f"redis-pw-{uuid.uuid4().hex[:12]}")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            str(REDIS_SERVER),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        command += ["--dir", str(self.directory), "--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis.from_url(self.url, socket_timeout=1)
        wait_until(lambda: _pings(client), 10, "the ephemeral redis-server to answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def ephemeral_redis(tmp_path: Path) -> Iterator[EphemeralRedis]:
    if not REDIS_SERVER.exists():
        pytest.fail(f"{REDIS_SERVER} is missing; {HOW_TO_GET}")
    server = EphemeralRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class EphemeralPostgres:
    """A PostgreSQL cluster of this test's own (initdb in a temporary directory), run as the postgres user."""

    directory: Path
    port: int = field(default_factory=free_port)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + list(command), check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.directory / "data"), "-U", "postgres", "--auth=trust")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options, "-l",
            str(self.directory / "log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")


@pytest.fixture
def ephemeral_pg() -> Iterator[EphemeralPostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"{PG_BIN}/initdb is missing; {HOW_TO_GET}")
    if os.geteuid() == 0 and not _user_exists("postgres"):
        pytest.fail(f"initdb refuses to run as root and there is no postgres user to run it as; {HOW_TO_GET}")
    directory = Path(tempfile.mkdtemp(prefix="stampede-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    cluster = EphemeralPostgres(directory)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by the test
            cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class WorkerProcess:
    """A ``python -m workers`` process, its log, and its forked children."""

    process: subprocess.Popen[bytes]
    log: Path

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        for pid in self.children():
            _kill(pid)
        _kill(self.process.pid)
        self.process.wait(timeout=10)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts workers with the given environment; kills what is left of them afterwards."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], queue: str, *args: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        name = f"{queue}-w{len(started)}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "workers", queue, "--name", name, *args],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


@pytest.fixture
def fleet_env(
    pg_url: str, shared_redis: str, queue_name: str, start_worker: Callable[..., WorkerProcess]
) -> dict[str, str]:
    """The environment of a fleet run, a fresh database and a queue of its own, with a worker storing
    what arrives on the queue."""
    env = {"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": shared_redis, "STAMPEDE_QUEUE_NAME": queue_name}
    start_worker(env, queue_name)
    return env
