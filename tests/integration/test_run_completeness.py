"""A run knows whether the store holds every request its load generators made: each Locust process
counts its records per step and sends the counts through its sink, and the report compares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.integration.fleet_helpers import run_locust, simulator_port, stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOST = 3


def report(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "stampede", "report"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_report_says_when_the_store_lacks_requests_the_load_generators_made(
    tmp_path: Path, pg_url: str, fleet_env: dict[str, str]
) -> None:
    env = fleet_env
    with simulator_port(tmp_path) as port:
        result = run_locust(tmp_path, env, port, "-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "20s")
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
