"""Secrets never reach the database, a log line or a report.

A planted API key, database password and Redis password go through the whole fleet path: a Locust-
side RQ sink (with a careless run config and an error message quoting the key), Redis with a password,
a real worker, PostgreSQL (trust auth accepts and ignores the planted password), then ``stampede
report``. Every row, every log line and the report are searched for them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from loadgen.rq_sink import RQSink
from stampede.db import upgrade
from stampede.records import Api, RunRecord, RunStatus, StepRecord
from stampede.settings import get_settings
from tests.integration.fleet_helpers import create_database, drop_database, produce, stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TABLES = ("runs", "steps", "requests", "step_stats", "gpu_samples", "runtime_samples")


def dump_rows(dsn: str) -> str:
    with psycopg.connect(dsn) as connection:
        return "\n".join(
            str(row[0])
            for table in TABLES
            for row in connection.execute(f"SELECT row_to_json(t)::text FROM {table} t").fetchall()
        )


def test_planted_secrets_reach_no_row_log_or_report(
    shared_pg, ephemeral_redis, queue_name, start_worker, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    api_key = f"sk-planted-{uuid.uuid4().hex}"
    db_password = f"db-planted-{uuid.uuid4().hex}"
    name = create_database(shared_pg)
    url = f"postgresql+psycopg://postgres:{db_password}@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        env = {"STAMPEDE_DATABASE_URL": url, "STAMPEDE_REDIS_URL": ephemeral_redis.url, "STAMPEDE_API_KEY": api_key}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        worker = start_worker(env, queue_name)

        run_id = uuid.uuid4()
        started = datetime.now(UTC)
        run = RunRecord(
            id=run_id,
            name="secrets",
            status=RunStatus.RUNNING,
            started_at=started,
            config={"headers": {"Authorization": f"Bearer {api_key}"}, "database_url": url},
        )
        step = StepRecord(
            run_id=run_id,
            target="sim",
            index=0,
            users=1,
            api=Api.OPENAI_CHAT,
            model="m",
            base_url="http://127.0.0.1:8000/v1",
            started_at=started,
            warmup_s=0,
            ended_at=datetime.now(UTC),
        )
        with caplog.at_level(logging.DEBUG):
            sink = RQSink(ephemeral_redis.url, queue_name, 100, 0.1)
            sink.add_run(run)
            sink.add_step(step)
            ephemeral_redis.stop()  # a failed delivery logs its error: that line must not quote a secret
            produce(sink, 300, run_id, error=f"HTTP 401: invalid key {api_key}")
            sink.add_run(run.model_copy(update={"status": RunStatus.FINISHED, "ended_at": datetime.now(UTC)}))
            assert not sink.flush(timeout_s=0.5)
            ephemeral_redis.start()
            assert sink.close(timeout_s=20)
        wait_until(lambda: stored_requests(url) == 300, 30, "the records to be stored")
        dsn = url.replace("+psycopg", "")
        wait_until(lambda: '"finished"' in dump_rows(dsn), 10, "the run to be marked finished")

        stampede = Path(sys.executable).with_name("stampede")
        report = subprocess.run(
            [str(stampede), "report", str(run_id)], env={**env, "PATH": ""}, capture_output=True, text=True, timeout=60
        )
        rows = dump_rows(dsn)
        places = {
            "database": rows,
            "worker log": worker.log.read_text(),
            "sink log": caplog.text,
            "report": report.stdout + report.stderr,
        }
        for secret in (api_key, db_password, ephemeral_redis.password):
            for place, text in places.items():
                assert secret not in text, f"a planted secret reached the {place}"
        # The searches looked at real content: masked values were stored, URLs logged masked, the report printed.
        assert "**********" in rows
        assert "postgres:***@" in places["worker log"]
        assert "could not deliver" in places["sink log"]
        assert report.returncode == 0 and "sim" in report.stdout
    finally:
        get_settings.cache_clear()
        drop_database(shared_pg, name)
