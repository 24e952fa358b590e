"""Helpers for the fleet tests: polling with a deadline, free ports, counting stored rows, headless
Locust against a simulator."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loadgen.sinks import Sink
from stampede.db import make_engine
from stampede.demo import free_port, start_simulator, stop
from stampede.locust_launch import locustfiles
from stampede.records import Api, Outcome, RequestRecord
from stampede.schema import Request


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail the test saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def stored_requests(url: str) -> int:
    """Rows in ``requests`` at ``url`` that Locust counts (all but ``cancelled``: requests the run's end cut
    short), or -1 while the database is unreachable."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            counted = select(func.count()).select_from(Request).where(Request.outcome != Outcome.CANCELLED.value)
            return session.scalar(counted) or 0
    except Exception:  # a restarting server: the caller polls again
        return -1
    finally:
        engine.dispose()


def create_database(admin_url: str, name: str | None = None) -> str:
    """Create an empty database on the server at ``admin_url`` (a random name unless given); returns the name."""
    name = name or f"stampede_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def produce(sink: Sink, count: int, run_id: uuid.UUID | None = None, error: str | None = None) -> None:
    """Add ``count`` request records of one run to ``sink``, as a Locust process would."""
    run_id = run_id or uuid.uuid4()
    for i in range(count):
        sink.add_request(
            RequestRecord(
                run_id=run_id,
                target="sim",
                step_index=0,
                in_warmup=False,
                host="test",
                pid=os.getpid(),
                api=Api.OPENAI_CHAT,
                model="m",
                prompt_id=f"p{i}",
                outcome=Outcome.OK if error is None else Outcome.HTTP_ERROR,
                error=error,
                started_at=datetime.now(UTC),
                chunk_offsets_ns=[1_000_000, 2_000_000],
                end_offset_ns=3_000_000,
            )
        )


@contextlib.contextmanager
def simulator_port(tmp_path: Path, profile: str = "vllm") -> Iterator[int]:
    """A simulator of ``profile`` on a free port, logging to ``tmp_path``, stopped afterwards."""
    port = free_port()
    simulator = start_simulator(profile, port, tmp_path / "sim.log")
    try:
        yield port
    finally:
        stop(simulator)


def run_locust(tmp_path: Path, env: dict[str, str], port: int, *options: str) -> subprocess.CompletedProcess[str]:
    """Headless Locust of our locustfile, OpenAI chat users of 16 tokens against the simulator on ``port``,
    in ``tmp_path`` with ``env`` as its whole environment (and a bare PATH), given ``options``."""
    command = [sys.executable, "-m", "locust", "--headless", "--host", f"http://127.0.0.1:{port}",
               "-f", locustfiles().split(",")[0], "--max-tokens", "16", *options, "OpenAIChatUser"]  # fmt: skip
    return subprocess.run(
        command,
        env={**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
