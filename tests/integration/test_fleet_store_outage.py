"""A worker whose store is gone takes no jobs until it is back, so no job spends its retries on it; and
jobs RQ gave up on anyway are put back by ``stampede replay --failed``.

Real PostgreSQL, Redis and ``python -m workers`` processes. The database is dropped under a running
worker (what an operator's mistake or a wiped volume does), records arrive, then it is created and
migrated again, as docs/fleet.md tells an operator to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from loadgen.rq_sink import RQSink
from stampede.db import upgrade
from tests.integration.fleet_helpers import create_database, drop_database, produce, stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RECORDS = 2000
BATCH = 500
PAUSED = "taking no jobs until the store is back"


def test_a_worker_holds_its_jobs_while_the_database_is_missing_and_stores_them_once_it_is_back(
    shared_pg, shared_redis, queue_name, start_worker
) -> None:
    name = create_database(shared_pg)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        worker = start_worker({"STAMPEDE_DATABASE_URL": url, "STAMPEDE_REDIS_URL": shared_redis}, queue_name)
        wait_until(lambda: b"Listening on" in worker.log.read_bytes(), 30, "the worker to listen")
        drop_database(shared_pg, name)

        sink = RQSink(shared_redis, queue_name, batch_size=BATCH, flush_interval_s=0.1)
        produce(sink, RECORDS)
        assert sink.close(timeout_s=10)
        wait_until(lambda: PAUSED.encode() in worker.log.read_bytes(), 30, "the worker to stop taking jobs")
        time.sleep(5)  # what a worker burning retries would do meanwhile: fail every job, again and again
        queue = Queue(queue_name, connection=Redis.from_url(shared_redis), serializer=JSONSerializer)
        assert FailedJobRegistry(queue=queue).count == 0
        assert queue.count >= RECORDS // BATCH - 1  # at most the job that found the outage was tried

        create_database(shared_pg, name)
        upgrade(url)
        wait_until(lambda: stored_requests(url) == RECORDS, 60, "every record to be stored", every_s=0.5)
        assert FailedJobRegistry(queue=queue).count == 0
        log = worker.log.read_text()
        assert log.count(PAUSED) == 1 and log.count("store reachable again") == 1
        assert log.count("exception raised while executing") == 1  # one failed job's traceback, not one per attempt
    finally:
        drop_database(shared_pg, name)


def replay_failed(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadgen.replay", "--failed"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_jobs_rq_gave_up_on_are_put_back_by_replay_failed_and_stored_once(
    pg_url, shared_redis, queue_name, start_worker
) -> None:
    sink = RQSink(shared_redis, queue_name, batch_size=BATCH, flush_interval_s=0.1)
    produce(sink, RECORDS)
    assert sink.close(timeout_s=10)
    # What RQ does with a job whose retries ran out (a store away for longer than they last, with a
    # worker that took jobs regardless): off the queue, into the failed-job registry.
    queue = Queue(queue_name, connection=Redis.from_url(shared_redis), serializer=JSONSerializer)
    for job in queue.jobs:
        queue.failed_job_registry.add(job, ttl=3600, exc_string="retries ran out")
        queue.remove(job)
    assert (queue.count, FailedJobRegistry(queue=queue).count) == (0, RECORDS // BATCH)

    env = {"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": shared_redis, "STAMPEDE_QUEUE_NAME": queue_name}
    result = replay_failed(env)
    assert result.returncode == 0, result.stderr
    assert f"{RECORDS // BATCH} failed jobs put back on queue {queue_name}" in result.stdout
    start_worker(env, queue_name)
    wait_until(lambda: stored_requests(pg_url) == RECORDS, 60, "the requeued jobs to be stored", every_s=0.5)
    assert FailedJobRegistry(queue=queue).count == 0
    again = replay_failed(env)
    assert again.returncode == 0 and "0 failed jobs put back" in again.stdout
    time.sleep(0.5)
    assert stored_requests(pg_url) == RECORDS
