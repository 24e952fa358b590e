"""Plain Locust (``locust -f loadgen/chat.py``) against llama.cpp's ``llama-server``: headless in one
process, and as a master with one worker process. Every request Locust counted is one stored row,
ok, with the tokens the server counted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from stampede.locust_launch import sent_requests
from stampede.processes import free_port, stop
from stampede.schema import Request
from tests.realservers.runs import (
    HEADLESS,
    LOCUST,
    RUN_TIMEOUT_S,
    fresh_database,
    run_locust_headless,
    stampede_env,
)
from tests.realservers.servers import MODEL_NAME, Server, prometheus_counters

pytest_plugins = ["tests.realservers.llamacpp_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

USERS = 8
LOAD = ["-u", str(USERS), "-r", str(USERS), "-t", "8s", "--model", MODEL_NAME, "--max-tokens", "24", "--ignore-eos"]


def stored(db_url: str) -> tuple[dict[str, int], int, int]:
    """Rows by outcome, and the sums of their prompt and output tokens."""
    with Session(create_engine(db_url)) as session:
        outcomes = dict(session.execute(select(Request.outcome, func.count()).group_by(Request.outcome)).all())
        prompt, output = session.execute(select(func.sum(Request.prompt_tokens), func.sum(Request.output_tokens))).one()
    return {str(k): int(v) for k, v in outcomes.items()}, int(prompt or 0), int(output or 0)


def check_run(server: Server, db_url: str, sent: int, before: dict[str, float], locust_counts_all: bool = True) -> None:
    after = prometheus_counters(server.url)
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    outcomes, prompt, output = stored(db_url)
    server_prompt = delta["llamacpp:prompt_tokens_total"] + delta.get("llamacpp:prompt_tokens_cached_total", 0.0)
    # The server's own count: every request it served is a stored row, none lost and none doubled.
    assert (prompt, output) == (server_prompt, delta["llamacpp:tokens_predicted_total"]), (outcomes, sent)
    assert set(outcomes) == {"ok"}, outcomes  # the server served every one
    assert sent > USERS
    if locust_counts_all:
        assert outcomes["ok"] == sent, (outcomes, sent)  # one row per request Locust counted
    else:
        assert outcomes["ok"] >= sent, (outcomes, sent)  # none lost of those it counted


def test_headless_locust_stores_one_ok_row_per_request(llama_server: Server, tmp_path: Path) -> None:
    db_url = fresh_database(tmp_path)
    before = prometheus_counters(llama_server.url)
    sent = run_locust_headless(llama_server.url, [*LOAD, "OpenAIChatUser"], db_url, tmp_path)
    check_run(llama_server, db_url, sent, before)


def test_a_master_and_a_worker_store_one_ok_row_per_request_the_server_served(
    llama_server: Server, tmp_path: Path
) -> None:
    db_url = fresh_database(tmp_path)
    env = stampede_env(db_url, tmp_path)
    port = free_port()
    before = prometheus_counters(llama_server.url)
    with (tmp_path / "worker.log").open("w") as worker_log:
        worker = subprocess.Popen(
            [*LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
             "OpenAIChatUser"],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:
        master = [*LOCUST, *HEADLESS, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                  "--expect-workers", "1", "--host", llama_server.url, *LOAD, "OpenAIChatUser"]  # fmt: skip
        result = subprocess.run(master, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        worker.wait(timeout=60)  # a worker quits when its master does, after handing over its records
    finally:
        stop(worker)
    # Locust's master prints its totals 0.5 s after telling its workers to quit, while a worker first lets its
    # users finish (up to --stop-timeout) and only then sends its last report: the master's count misses the
    # worker's last seconds (16 of 60 requests here). The server's own counters are the exact check.
    check_run(llama_server, db_url, sent_requests(result.stdout), before, locust_counts_all=False)
