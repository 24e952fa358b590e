"""Locust against the simulator: every request completed is one stored row, whatever its outcome."""

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.locust_launch import locustfiles, sent_requests
from stampede.processes import free_port, stop
from stampede.report import step_summaries
from stampede.schema import LoadgenSample, Request, Run, RuntimeSample, Step, StepStats

RUN_TIMEOUT_S = 120


@contextmanager
def simulator(tmp_path: Path, profile: str, *args: str) -> Iterator[str]:
    port = free_port()
    process = start_simulator(profile, port, tmp_path / f"sim-{profile}.log", *args)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def run_locust(tmp_path: Path, host: str, *args: str) -> tuple[str, int]:
    """Run Locust headless into a fresh SQLite file; returns the database URL and Locust's request count."""
    db_url = f"sqlite:///{tmp_path}/results.db"
    upgrade(db_url)
    # --json prints Locust's final statistics (its periodic CSV can be written before the last requests end).
    command = [sys.executable, "-m", "locust", "--headless", "--json", "--host", host,
               "--stop-timeout", "30s", "--exit-code-on-error", "0", *args]  # fmt: skip
    result = subprocess.run(
        command,
        env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return db_url, sent_requests(result.stdout)


def stored(db_url: str, *where) -> int:
    with Session(create_engine(db_url)) as session:
        return session.scalar(select(func.count()).select_from(Request).where(*where)) or 0


def test_a_plain_locust_run_stores_exactly_one_row_per_request(tmp_path: Path) -> None:
    with simulator(tmp_path, "vllm") as host:
        db_url, sent = run_locust(
            tmp_path, host, "-f", locustfiles().split(",")[0], "-u", "8", "-r", "8", "-t", "4s",
            "--max-tokens", "16", "--ignore-eos", "OpenAIChatUser",
        )  # fmt: skip
    assert sent > 20
    assert stored(db_url) == sent
    assert stored(db_url, Request.outcome == "ok") == sent
    with Session(create_engine(db_url)) as session:
        run = session.scalars(select(Run)).one()
        step = session.scalars(select(Step)).one()
        tokens = session.scalars(select(Request.output_tokens)).all()
        request_ids = session.scalars(select(Request.server_request_id)).all()
        health = session.scalars(select(LoadgenSample)).all()
    assert run.status == "finished" and step.users == 8 and step.ended_at is not None
    assert set(tokens) == {16}  # the server's usage count: exactly max tokens, as ignore_eos asks
    assert None not in request_ids and len(set(request_ids)) == sent  # the simulator's X-Request-Id
    assert len(health) >= 2 and {h.run_id for h in health} == {run.id}  # one self-check a second


def test_a_stepped_run_over_two_processes_stores_every_request_by_step(tmp_path: Path) -> None:
    with simulator(tmp_path, "ollama") as host:
        db_url, sent = run_locust(
            tmp_path, host, "-f", locustfiles(), "--processes", "2", "--steps", "2,6",
            "--step-duration-s", "3", "--warmup-s", "1", "--max-tokens", "16", "OllamaChatUser",
        )  # fmt: skip
    assert stored(db_url) == sent
    with Session(create_engine(db_url)) as session:
        pids = session.scalars(select(Request.pid).distinct()).all()
        run_id = session.scalars(select(Run.id)).one()
        summaries = step_summaries(session, run_id)
    assert len(pids) == 2
    assert [(s.index, s.summary.users) for s in summaries] == [(0, 2), (1, 6)]
    assert all(s.summary.requests > 0 and s.summary.errors == 0 for s in summaries)


def test_server_faults_become_outcomes_and_are_still_stored(tmp_path: Path) -> None:
    faults = ["--fault-500", "0.15", "--fault-truncate", "0.15", "--fault-malformed", "0.15", "--seed", "3"]
    with simulator(tmp_path, "vllm", *faults) as host:
        db_url, sent = run_locust(
            tmp_path, host, "-f", locustfiles().split(",")[0], "-u", "6", "-r", "6", "-t", "4s",
            "--max-tokens", "16", "OpenAIChatUser",
        )  # fmt: skip
    assert stored(db_url) == sent
    with Session(create_engine(db_url)) as session:
        outcomes = dict(session.execute(select(Request.outcome, func.count()).group_by(Request.outcome)).all())
        statuses = set(session.scalars(select(Request.http_status).where(Request.outcome == "http_error")))
    assert {"ok", "http_error", "truncated", "invalid_stream"} <= set(outcomes), outcomes
    assert statuses == {500}


def test_open_loop_over_capacity_records_how_late_each_request_was_sent(tmp_path: Path) -> None:
    with simulator(tmp_path, "ollama", "--max-running", "1") as host:
        db_url, sent = run_locust(
            tmp_path, host, "-f", locustfiles(), "--steps", "2", "--rates", "20", "--step-duration-s", "3",
            "--max-tokens", "16", "--arrival", "constant", "OllamaChatUser",
        )  # fmt: skip
    assert stored(db_url) == sent
    with Session(create_engine(db_url)) as session:
        delays = session.scalars(select(Request.send_delay_ms).order_by(Request.started_at)).all()
        rate = session.scalars(select(Step.request_rate_per_s)).one()
    assert rate == 20.0
    # Two requests in flight cannot keep up with 20/s: sends fall further and further behind.
    assert delays[-1] > delays[0] + 100


def test_open_loop_with_users_to_spare_keeps_each_steps_rate_and_stops_with_its_last_step(tmp_path: Path) -> None:
    started = time.monotonic()
    with simulator(tmp_path, "vllm") as host:
        db_url, sent = run_locust(
            tmp_path, host, "-f", locustfiles(), "--steps", "64", "--rates", "4,8", "--step-duration-s", "3",
            "--warmup-s", "0", "--max-tokens", "4", "--arrival", "constant", "OpenAIChatUser",
        )  # fmt: skip
    took_s = time.monotonic() - started
    assert stored(db_url) == sent
    with Session(create_engine(db_url)) as session:
        per_step = dict(session.execute(select(Request.step_index, func.count()).group_by(Request.step_index)).all())
        last_end = session.scalars(select(func.max(Step.ended_at))).one()
        last_send = session.scalars(select(func.max(Request.started_at))).one()
    # 3 s at 4/s, then 3 s at 8/s; 64 idle users must not send ahead of the schedule, nor after it
    # (before the pacer handed out due times, this step stored 99 and sends went on for a minute).
    assert 9 <= per_step[0] <= 15 and 19 <= per_step[1] <= 28, per_step
    assert (last_send - last_end).total_seconds() < 0.5  # a send due as the stop began may still go
    assert took_s < 30, took_s  # no user sleeping towards a send planned long after the end


def test_sweep_prints_one_line_per_step_and_samples_the_runtime(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "stampede", "sweep", "--steps", "1,3", "--step-duration-s", "2",
               "--warmup-s", "0.5", "--max-tokens", "8", "--target-name", "sim", "--runtime", "vllm"]  # fmt: skip
    db_url = f"sqlite:///{tmp_path}/s.db"
    with simulator(tmp_path, "vllm") as host:
        result = subprocess.run(
            [*command, "--host", host],
            env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("sim ")]
    assert [(cols[1], cols[2]) for cols in lines] == [("0", "1"), ("1", "3")]
    # The progress lines number the steps as the table does.
    assert "sim: step 0 (1 users), 1 of 2" in result.stderr and "sim: step 1 (3 users), 2 of 2" in result.stderr
    # The errors column (failed/completed), the only one with a slash; none failed.
    assert all([cell for cell in cols if "/" in cell][0].startswith("0/") for cols in lines), result.stdout
    run_id = uuid.UUID(result.stderr.split()[1].rstrip(":"))
    with Session(create_engine(db_url)) as session:
        gauges = set(session.scalars(select(RuntimeSample.metric).where(RuntimeSample.run_id == run_id)))
        cached = session.scalar(select(func.count()).select_from(StepStats).where(StepStats.run_id == run_id))
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= gauges  # scraped during the load
    assert cached == 2  # both steps summarised at the end of the sweep, so reports read them ready-made


def test_a_failing_target_gets_backed_off_not_hammered(tmp_path: Path) -> None:
    locustfile = locustfiles().split(",")[0]
    # Every request refused with 429 and Retry-After: 1: each of 4 users tries at about 0, 1 and 2 s.
    with simulator(tmp_path / "a", "vllm", "--fault-429", "1", "--retry-after-s", "1") as host:
        db_url, sent = run_locust(
            tmp_path / "a", host, "-f", locustfile, "-u", "4", "-r", "4", "-t", "3s", "OpenAIChatUser"
        )
    assert 8 <= sent <= 16, sent  # without the backoff, hundreds a second
    assert stored(db_url) == stored(db_url, Request.http_status == 429) == sent
    # A 500 every time, no Retry-After: waits of 0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s; six tries each in 3 s
    # (the fifth is due at 0.75 s, the seventh at 3.15 s).
    with simulator(tmp_path / "b", "vllm", "--fault-500", "1") as host:
        db_url, sent = run_locust(
            tmp_path / "b", host, "-f", locustfile, "-u", "4", "-r", "4", "-t", "3s", "OpenAIChatUser"
        )
    assert 4 * 5 <= sent <= 4 * 7, sent  # the margins allow a late start or stop
    assert stored(db_url, Request.http_status == 500) == sent
