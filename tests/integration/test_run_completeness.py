"""A run knows whether the store holds every request its load generators made: each Locust process
counts its records per step and sends the counts through its sink, and the report compares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from stampede.demo import free_port, start_simulator, stop
from stampede.locust_launch import locustfiles
from tests.integration.fleet_helpers import stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOST = 3


def report(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "stampede", "report"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_report_says_when_the_store_lacks_requests_the_load_generators_made(
    tmp_path: Path, pg_url: str, shared_redis: str, queue_name: str, start_worker
) -> None:
    env = {"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": shared_redis, "STAMPEDE_QUEUE_NAME": queue_name}
    start_worker(env, queue_name)
    port = free_port()
    simulator = start_simulator("vllm", port, tmp_path / "sim.log")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "locust", "--headless", "--host", f"http://127.0.0.1:{port}", "-f",
             locustfiles().split(",")[0], "-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "20s",
             "--max-tokens", "16", "OpenAIChatUser"],
            env={**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
            timeout=90, cwd=tmp_path,
        )  # fmt: skip
    finally:
        stop(simulator)
    assert result.returncode == 0, result.stderr[-3000:]
    dsn = pg_url.replace("+psycopg", "")

    def counted() -> int:
        with psycopg.connect(dsn) as connection:
            row = connection.execute("SELECT coalesce(sum(requests), 0) FROM loadgen_counts").fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: counted() > 0 and stored_requests(pg_url) == counted(), 30, "records and counts to be stored")
    made = counted()
    assert made > 10 and "incomplete" not in report(env)

    # A batch the store never got (RQ gave up on it, or a Locust process still holds it in a file).
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"DELETE FROM requests WHERE id IN (SELECT id FROM requests LIMIT {LOST})")
    text = report(env)
    assert f"incomplete: {made - LOST:,} of {made:,} requests stored" in text, text
    assert "stampede replay --failed" in text
