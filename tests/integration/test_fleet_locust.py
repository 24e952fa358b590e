"""The whole fleet route: Locust (two processes) against the simulator, records through RQ to a real
worker, into PostgreSQL. Every request Locust counted is one stored row, and the run and its step
arrive too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest

from stampede.demo import free_port
from stampede.locust_launch import locustfiles, sent_requests
from tests.integration.fleet_helpers import run_locust, simulator_port, stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def served_requests(port: int) -> list[dict[str, object]]:
    """The simulator's ground truth: every request it answered (up to its limit of 10,000)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/requests", timeout=30) as answer:
        return json.load(answer)["requests"]


def test_locust_records_reach_postgres_through_rq(tmp_path: Path, pg_url: str, fleet_env: dict[str, str]) -> None:
    with simulator_port(tmp_path) as port:
        result = run_locust(tmp_path, fleet_env, port, "--json", "--stop-timeout", "30s", "--exit-code-on-error",
                            "0", "--processes", "2", "-u", "8", "-r", "8", "-t", "4s")  # fmt: skip
        served = len(served_requests(port))
    assert result.returncode == 0, result.stderr[-3000:]
    # Locust's master may print its count before a worker's last report arrives (it waits 0.5 s for
    # them at quit), so the server's own list is the exact count; Locust's is a lower bound.
    assert served > 20 and sent_requests(result.stdout) <= served
    wait_until(lambda: stored_requests(pg_url) >= served, 30, "the worker to store every record")
    assert stored_requests(pg_url) == served
    with psycopg.connect(pg_url.replace("+psycopg", "")) as connection:
        runs = connection.execute("SELECT status FROM runs").fetchall()
        steps = connection.execute("SELECT users, ended_at IS NOT NULL FROM steps").fetchall()
    assert runs == [("finished",)]
    assert steps == [(8, True)]


def test_a_distributed_run_with_pauses_between_deliveries_logs_no_outage(
    tmp_path: Path, pg_url: str, fleet_env: dict[str, str]
) -> None:
    """A master delivers only at step changes, over 5 s apart: a thread pool that retires idle threads
    left the Redis connection on a destroyed event loop, and every step change logged a false outage."""
    env = {**fleet_env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    master_port = free_port()
    with simulator_port(tmp_path) as port:
        master = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", locustfiles(), "--master", "--headless", "--expect-workers", "1",
             "--master-bind-port", str(master_port), "--host", f"http://127.0.0.1:{port}", "--steps", "2,4",
             "--step-duration-s", "7", "--max-tokens", "16", "--stop-timeout", "20s", "OpenAIChatUser"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        )  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", locustfiles(), "--worker", "--master-port", str(master_port),
             "OpenAIChatUser"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        )  # fmt: skip
        _, master_log = master.communicate(timeout=90)
        _, worker_log = worker.communicate(timeout=30)
    assert master.returncode == 0, master_log[-3000:]
    for log in (master_log, worker_log):
        assert "could not deliver" not in log, log[-3000:]
    with psycopg.connect(pg_url.replace("+psycopg", "")) as connection:
        wait_until(lambda: connection.execute("SELECT count(*) FROM steps WHERE ended_at IS NOT NULL").fetchone()
                   == (2,), 30, "both steps to be stored")  # fmt: skip


def test_a_fleet_locust_process_exits_cleanly_every_time(tmp_path: Path, fleet_env: dict[str, str]) -> None:
    """The sink's delivery thread is gone before the process exits: one still tearing down its event loop
    while the interpreter finalised crashed about one exit in two (SIGSEGV, after "exit code 0")."""
    with simulator_port(tmp_path) as port:
        codes = [run_locust(tmp_path, fleet_env, port, "-u", "4", "-r", "4", "-t", "2s").returncode for _ in range(8)]
    assert codes == [0] * 8
