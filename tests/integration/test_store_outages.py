"""A store that cannot take records: refused before the first request when it is so at the start, and
when it fails during a run, the Locust process exits within seconds of the run's end (SIGTERM cuts
the wait), keeping every record in one file that `stampede replay` delivers whole (run and steps too).

Before: a missing schema was found only after the run, and a store that failed held the exit for two
minutes (a 60 s flush and a 60 s close), leaving request rows in journal segments and losing the run."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.locust_launch import sent_requests
from stampede.processes import free_port, stop
from tests.integration.fleet_helpers import create_database, stored_requests, wait_until
from tests.integration.locust_runs import BIN, counting_target, locust, user_env

pytest_plugins = ["tests.integration.fleet_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# A refusal comes after Locust's imports (seconds on a busy machine), before any load.
REFUSED_WITHIN_S = 30.0
# STAMPEDE_EXIT_WAIT_S's default is 10 s; the rest is Locust's own shutdown on a busy machine.
EXIT_AFTER_RUN_END_S = 20.0
RUN_END = "--run-time limit reached"


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start_simulator("ollama", port, tmp_path / "sim.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def assert_refused(run: subprocess.CompletedProcess[str] | tuple[int, str], needle: str) -> None:
    code, output = (run.returncode, run.stdout + run.stderr) if not isinstance(run, tuple) else run
    assert code == 2, output[-3000:]
    lines = [line for line in output.splitlines() if needle in line]
    assert len(lines) == 1, output[-3000:]
    assert "Traceback" not in output


@pytest.mark.parametrize("revision", [None, "0004"], ids=["no tables", "behind"])
def test_locust_refuses_a_postgresql_store_missing_its_schema_before_any_request(
    tmp_path: Path, empty_pg: str, revision: str | None
) -> None:
    if revision is not None:
        upgrade(empty_pg, revision)
    with counting_target() as (host, target):
        run = locust(tmp_path, user_env(tmp_path, STAMPEDE_DATABASE_URL=empty_pg), host,
                     "OllamaChatUser", "--headless", "-u", "4", "-t", "30s")  # fmt: skip
        code, ended = run.finish(REFUSED_WITHIN_S + 30)
    assert ended - run.started < REFUSED_WITHIN_S
    assert_refused((code, run.text()), "run `stampede db upgrade` with this STAMPEDE_DATABASE_URL")
    assert target.posts == 0


def test_sweep_and_worker_refuse_a_postgresql_store_without_tables(tmp_path: Path, empty_pg: str, shared_redis) -> None:
    env = user_env(tmp_path, STAMPEDE_DATABASE_URL=empty_pg)
    with counting_target() as (host, target):
        sweep = subprocess.run(
            [str(BIN / "stampede"), "sweep", "--host", host, "--steps", "1", "--step-duration-s", "5",
             "--warmup-s", "0"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=REFUSED_WITHIN_S,
        )  # fmt: skip
    assert_refused(sweep, "has no tables yet: run `stampede db upgrade`")
    assert target.posts == 0
    worker = subprocess.run(
        [str(BIN / "stampede"), "worker", "--burst"],
        cwd=tmp_path, env={**env, "STAMPEDE_REDIS_URL": shared_redis}, capture_output=True, text=True,
        timeout=REFUSED_WITHIN_S,
    )  # fmt: skip
    assert_refused(worker, "has no tables yet: run `stampede db upgrade`")


def test_locust_refuses_an_unreachable_redis_before_any_request(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with counting_target() as (host, target):
        run = locust(tmp_path, user_env(tmp_path, STAMPEDE_REDIS_URL=closed), host,
                     "OllamaChatUser", "--headless", "-u", "4", "-t", "10s")  # fmt: skip
        code, ended = run.finish(REFUSED_WITHIN_S + 30)
    assert ended - run.started < REFUSED_WITHIN_S  # before: 131 s for a 10 s run, exit status 0
    assert_refused((code, run.text()), f"Redis at {closed} is unreachable")
    assert target.posts == 0


def replay(folder: Path, env: dict[str, str], kept: Path) -> None:
    result = subprocess.run([str(BIN / "stampede"), "replay", str(kept)], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert not kept.exists()


def run_status(url: str) -> list[str]:
    with create_engine(url).connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT status FROM runs"))]


def test_redis_lost_mid_run_exits_within_seconds_and_replay_restores_the_run(
    tmp_path: Path, simulator: str, pg_url: str, ephemeral_redis, queue_name: str, start_worker
) -> None:
    fleet = {"STAMPEDE_REDIS_URL": ephemeral_redis.url, "STAMPEDE_QUEUE_NAME": queue_name}
    start_worker({"STAMPEDE_DATABASE_URL": pg_url, **fleet}, queue_name)
    # Rows wait in memory for the run's end, so none is in Redis when it stops (this Redis keeps nothing).
    env = user_env(tmp_path, STAMPEDE_FLUSH_INTERVAL_S="600", **fleet)
    run = locust(tmp_path, env, simulator, "OllamaChatUser", "--headless", "-u", "4", "-t", "10s", "--json")
    wait_until(lambda: run_status(pg_url) == ["running"], 60, "the run row to be stored")
    ephemeral_redis.stop()
    run_end = run.wait_for(RUN_END, 60)
    code, ended = run.finish(120)
    assert code in (0, 1), run.text()[-3000:]  # 1: requests cut at the run's end count as failures
    assert ended - run_end < EXIT_AFTER_RUN_END_S, f"exited {ended - run_end:.0f} s after the run's end"
    records, kept = run.kept()
    sent = sent_requests(run.stdout())
    assert sent > 0 and records > sent  # the requests, the steps and the run's end

    ephemeral_redis.start()
    replay(tmp_path, env, kept)
    wait_until(lambda: stored_requests(pg_url) == sent, 60, "every request to be stored after the replay")
    wait_until(lambda: run_status(pg_url) == ["finished"], 30, "the run's end to be stored")


def test_sigterm_cuts_the_wait_for_a_lost_redis_short(
    tmp_path: Path, simulator: str, ephemeral_redis, queue_name: str
) -> None:
    env = user_env(tmp_path, STAMPEDE_REDIS_URL=ephemeral_redis.url, STAMPEDE_QUEUE_NAME=queue_name,
                   STAMPEDE_EXIT_WAIT_S="600")  # fmt: skip
    run = locust(tmp_path, env, simulator, "OllamaChatUser", "--headless", "-u", "2", "-t", "6s")
    run.wait_for("All users spawned", 60)
    ephemeral_redis.stop()
    run.wait_for(RUN_END, 60)
    time.sleep(1)  # waiting now, for up to 600 s
    run.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, ended = run.finish(60)
    assert ended - signalled < 15.0, f"exited {ended - signalled:.0f} s after SIGTERM"
    records, kept = run.kept()
    assert records > 0 and kept.exists()


def test_database_lost_mid_run_exits_within_seconds_and_replay_stores_everything(
    tmp_path: Path, simulator: str, ephemeral_pg
) -> None:
    name = create_database(ephemeral_pg.admin_url)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{ephemeral_pg.port}/{name}"
    upgrade(url)
    env = user_env(tmp_path, STAMPEDE_DATABASE_URL=url)
    run = locust(tmp_path, env, simulator, "OllamaChatUser", "--headless", "-u", "4", "-t", "10s", "--json")
    wait_until(lambda: stored_requests(url) > 0, 60, "the first rows to be stored")
    ephemeral_pg.stop()
    run_end = run.wait_for(RUN_END, 60)
    code, ended = run.finish(120)
    assert code in (0, 1), run.text()[-3000:]  # 1: requests cut at the run's end count as failures
    assert ended - run_end < EXIT_AFTER_RUN_END_S, f"exited {ended - run_end:.0f} s after the run's end"
    _, kept = run.kept()
    sent = sent_requests(run.stdout())

    ephemeral_pg.start()
    replay(tmp_path, env, kept)
    assert stored_requests(url) == sent
    assert run_status(url) == ["finished"]
    assert sorted(p.name for p in tmp_path.glob("stampede-journal-*")) == []
