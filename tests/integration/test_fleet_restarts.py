"""Nothing lost when Redis or PostgreSQL restarts in the middle of a run.

Each test restarts a server of its own (an ephemeral redis-server, or a cluster made with initdb),
never the shared ones, while a real RQ sink produces records and a real worker stores them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis import Redis

from loadgen.rq_sink import RQSink
from stampede.db import upgrade
from tests.integration.fleet_helpers import create_database, produce, stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_redis_restart_mid_run_buffers_spills_and_replays(
    pg_url, ephemeral_redis, queue_name, start_worker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis here keeps nothing across a restart (``--save "" --appendonly no``), so it goes down
    with its queue drained, and the test checks what arrives while it is away. In production, Redis
    with ``--appendonly yes`` (as in docker-compose.yml) also keeps queued jobs across a restart."""
    start_worker({"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": ephemeral_redis.url}, queue_name)
    spill = tmp_path / "spill.jsonl"
    sink = RQSink(ephemeral_redis.url, queue_name, 250, 0.1, max_buffered_records=1000, spill_path=spill)
    with caplog.at_level(logging.WARNING, logger="loadgen.sinks"):
        produce(sink, 1000)
        assert sink.flush(timeout_s=10)
        wait_until(lambda: stored_requests(pg_url) == 1000, 20, "the first records to be stored")

        ephemeral_redis.stop()
        produce(sink, 3000)
        assert not sink.flush(timeout_s=1)
        assert spill.exists(), "records past the in-memory bound should be in the spill file"

        ephemeral_redis.start()
        produce(sink, 1000)
        assert sink.close(timeout_s=30)
    assert not spill.exists()
    wait_until(lambda: stored_requests(pg_url) == 5000, 40, "every record to be stored after the restart")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("buffering and retrying" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1


def test_postgres_restart_mid_run_is_ridden_out_by_job_retries(
    ephemeral_pg, shared_redis, queue_name, start_worker
) -> None:
    name = create_database(ephemeral_pg.admin_url)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{ephemeral_pg.port}/{name}"
    upgrade(url)
    start_worker({"STAMPEDE_DATABASE_URL": url, "STAMPEDE_REDIS_URL": shared_redis}, queue_name)
    sink = RQSink(shared_redis, queue_name, 500, 0.1)
    produce(sink, 1000)
    assert sink.flush(timeout_s=10)
    wait_until(lambda: stored_requests(url) == 1000, 20, "the first records to be stored")

    ephemeral_pg.stop()
    produce(sink, 2000)
    assert sink.flush(timeout_s=10)  # Redis is up: the batches are queued, their stores fail and retry
    wait_until(lambda: failed_attempts(shared_redis, queue_name) > 0, 20, "a store to fail while the database is down")
    ephemeral_pg.start()
    assert sink.close(timeout_s=10)
    wait_until(lambda: stored_requests(url) == 3000, 45, "every record to be stored after the restart", every_s=0.5)


def failed_attempts(redis_url: str, queue: str) -> int:
    """Jobs waiting for a retry: RQ puts a failed job with retries left in the scheduled registry."""
    return int(Redis.from_url(redis_url).zcard(f"rq:scheduled:{queue}"))


def test_worker_started_before_redis_waits_for_it(pg_url, ephemeral_redis, queue_name, start_worker) -> None:
    ephemeral_redis.stop()
    worker = start_worker({"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": ephemeral_redis.url}, queue_name)
    wait_until(lambda: b"Redis unreachable" in worker.log.read_bytes(), 20, "the worker to find Redis away")
    assert worker.process.poll() is None
    ephemeral_redis.start()
    sink = RQSink(ephemeral_redis.url, queue_name, 250, 0.1)
    produce(sink, 500)
    assert sink.close(timeout_s=10)
    wait_until(lambda: stored_requests(pg_url) == 500, 30, "the records to be stored once Redis is up")
