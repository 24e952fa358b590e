"""A scheduled sweep goes through RQ's cron job and a real worker, and its regression flag works both ways."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from select import select as wait_readable

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from stampede.schedules import add_schedule
from stampede.schema import Run
from stampede.settings import get_settings
from stampede.sweepfile import SweepFile
from workers.sweeps import RETRY_S, RUN_SCHEDULED_SWEEP, SweepScheduler

pytest_plugins = ["tests.integration.fleet_fixtures"]

WORKER_TIMEOUT_S = 180


@pytest.fixture
def fleet_env(
    tmp_path: Path, shared_redis: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The environment of a small fleet: one database, Redis, a records queue and a worker storing from it."""
    db_url = f"sqlite:///{tmp_path}/results.db"
    upgrade(db_url)
    env = {
        "STAMPEDE_DATABASE_URL": db_url,
        "STAMPEDE_REDIS_URL": shared_redis,
        "STAMPEDE_QUEUE_NAME": f"{queue_name}-records",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    records_worker = subprocess.Popen(
        [sys.executable, "-m", "workers"], env={**os.environ, **env}, cwd=tmp_path, stderr=subprocess.DEVNULL
    )
    try:
        yield env
    finally:
        records_worker.terminate()
        records_worker.wait(timeout=30)
        get_settings.cache_clear()


def run_due_sweep(scheduler: SweepScheduler, queue_name: str, env: dict[str, str], tmp_path: Path) -> Run:
    """Make the schedule due now, let the scheduler enqueue it, and run a sweeps worker until its queue is empty."""
    scheduler.reload()
    (_, job) = scheduler.jobs["nightly"]
    job.next_enqueue_time = datetime.now(UTC) - timedelta(seconds=1)
    assert scheduler.enqueue_due() == ["nightly"]
    queued = Queue(queue_name, connection=scheduler.connection, serializer=JSONSerializer).jobs
    assert [(j.func_name, j.args) for j in queued] == [(RUN_SCHEDULED_SWEEP, ["nightly"])]  # JSON: a list
    result = subprocess.run(
        [sys.executable, "-m", "workers", queue_name, "--burst"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with Session(create_engine(env["STAMPEDE_DATABASE_URL"])) as session:
        return session.scalars(select(Run).order_by(Run.started_at.desc()).limit(1)).one()


def test_scheduled_sweeps_run_on_a_worker_and_flag_regressions_both_ways(
    tmp_path: Path, fleet_env: dict[str, str], queue_name: str
) -> None:
    port = free_port()
    spec = SweepFile.model_validate(
        {
            "name": "nightly sim",
            "targets": [{"name": "sim", "url": f"http://127.0.0.1:{port}", "model": "stampede-sim"}],
            "steps": [4],
            "step_duration_s": 3,
            "warmup_s": 1,
            "max_tokens": 16,
            "ignore_eos": True,
            "regression": {"throughput_drop_pct": 20, "latency_rise_pct": 50},
        }
    )
    with Session(create_engine(fleet_env["STAMPEDE_DATABASE_URL"])) as session, session.begin():
        add_schedule(session, "nightly", "0 3 * * *", spec)
    scheduler = SweepScheduler(Redis.from_url(fleet_env["STAMPEDE_REDIS_URL"]), queue_name)

    def sweep_against(*simulator_args: str) -> Run:
        simulator = start_simulator("vllm", port, tmp_path / "sim.log", *simulator_args)
        try:
            return run_due_sweep(scheduler, queue_name, fleet_env, tmp_path)
        finally:
            stop(simulator)

    first = sweep_against()
    assert first.accepted and first.regression is False and first.baseline_run_id is None

    slower = sweep_against("--step-base-ms", "60")  # every decode step five times as long
    assert slower.regression is True and slower.baseline_run_id == first.id
    assert {f["metric"] for f in slower.findings} >= {"output_tokens_per_s", "itl p99 ms"}
    assert not slower.accepted

    same = sweep_against()
    assert same.regression is False and same.baseline_run_id == first.id and same.findings == []


def test_a_due_sweep_waits_out_a_redis_outage(fleet_env: dict[str, str], queue_name: str) -> None:
    spec = SweepFile.model_validate(
        {"name": "n", "targets": [{"name": "sim", "url": "http://127.0.0.1:9", "model": "m"}], "warmup_s": 1}
    )
    with Session(create_engine(fleet_env["STAMPEDE_DATABASE_URL"])) as session, session.begin():
        add_schedule(session, "nightly", "0 3 * * *", spec)
    away = SweepScheduler(Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"), queue_name)  # nothing listens
    away.reload()
    (_, job) = away.jobs["nightly"]
    job.next_enqueue_time = datetime.now(UTC) - timedelta(seconds=1)
    assert away.enqueue_due() == [] and away.redis_down and away.sleep_s() == RETRY_S
    away.connection = Redis.from_url(fleet_env["STAMPEDE_REDIS_URL"])  # Redis is back
    assert away.enqueue_due() == ["nightly"] and not away.redis_down
    queued = Queue(queue_name, connection=away.connection, serializer=JSONSerializer).jobs
    assert [j.args for j in queued] == [["nightly"]]


def test_a_scheduler_without_its_database_says_why_and_keeps_going(
    shared_pg: str, shared_redis: str, queue_name: str
) -> None:
    # shared_pg: the server is there (else its fixture says how to get one); the database is not.
    password = f"pw-{uuid.uuid4().hex}"
    missing = f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/stampede_missing_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "STAMPEDE_DATABASE_URL": missing, "STAMPEDE_REDIS_URL": shared_redis}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "workers", "scheduler", "--queue", queue_name], env=env, stderr=subprocess.PIPE
    )
    try:
        assert scheduler.stderr is not None
        said, deadline = "", time.monotonic() + 60
        while "cannot read the schedules" not in said:
            ready, _, _ = wait_readable([scheduler.stderr], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no warning within 60 s: {said}"
            data = os.read(scheduler.stderr.fileno(), 65536)
            assert data, f"the scheduler exited: {said}"
            said += data.decode()
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    assert f'database "{missing.rsplit("/", 1)[1]}" does not exist' in said
    assert password not in said
