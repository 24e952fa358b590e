"""The whole fleet route: Locust (two processes) against the simulator, records through RQ to a real
worker, into PostgreSQL. Every request Locust counted is one stored row, and the run and its step
arrive too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from stampede.demo import free_port, start_simulator, stop
from stampede.sweep import locustfiles, sent_requests
from tests.integration.fleet_helpers import stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_locust_records_reach_postgres_through_rq(
    tmp_path: Path, pg_url: str, shared_redis: str, queue_name: str, start_worker
) -> None:
    env = {"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": shared_redis, "STAMPEDE_QUEUE_NAME": queue_name}
    start_worker(env, queue_name)
    port = free_port()
    simulator = start_simulator("vllm", port, tmp_path / "sim.log")
    try:
        command = [sys.executable, "-m", "locust", "--headless", "--json", "--host", f"http://127.0.0.1:{port}",
                   "--stop-timeout", "30s", "--exit-code-on-error", "0", "--processes", "2",
                   "-f", locustfiles().split(",")[0], "-u", "8", "-r", "8", "-t", "4s",
                   "--max-tokens", "16", "OpenAIChatUser"]  # fmt: skip
        result = subprocess.run(
            command,
            env={**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
        )
    finally:
        stop(simulator)
    assert result.returncode == 0, result.stderr[-3000:]
    sent = sent_requests(result.stdout)
    assert sent > 20
    wait_until(lambda: stored_requests(pg_url) >= sent, 30, "the worker to store every record")
    assert stored_requests(pg_url) == sent
    with psycopg.connect(pg_url.replace("+psycopg", "")) as connection:
        runs = connection.execute("SELECT status FROM runs").fetchall()
        steps = connection.execute("SELECT users, ended_at IS NOT NULL FROM steps").fetchall()
    assert runs == [("finished",)]
    assert steps == [(8, True)]
