"""Nothing lost when a worker is killed with SIGKILL in the middle of a batch.

Real PostgreSQL, Redis and ``python -m workers`` processes. The batch is held mid-store by a table
lock the test takes, so the kill lands while the job's COPY is under way, every time.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from loadgen.rq_sink import RQSink
from tests.integration.fleet_helpers import produce, stored_requests, wait_until

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RECORDS = 2000
BATCH = 500
RECOVERY_BOUND_S = 60
"""docs/fleet.md's promise: a store job's 30 s timeout plus 5 s, then a maintenance pass of a live worker
(every 10 s, and an idle one wakes every 15 s), then the retry's 1 s."""


def blocked_inserts(locker: psycopg.Connection) -> int:
    with locker.cursor() as cursor:  # a second connection would see the same; this one is at hand
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def all_jobs_finished(redis_url: str, name: str) -> bool:
    # Counting finished jobs, not empty queues: a job moving between the queue and the started
    # registry is briefly in neither.
    queue = Queue(name, connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    return FinishedJobRegistry(queue=queue).count == RECORDS // BATCH


def test_killed_work_horse_batch_is_retried_and_stored_once(pg_url, shared_redis, queue_name, start_worker) -> None:
    env = {"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": shared_redis}
    dsn = pg_url.replace("+psycopg", "")
    with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as observer:
        locker.execute("LOCK TABLE requests IN SHARE MODE")  # held until rollback: stores wait on it
        worker = start_worker(env, queue_name, "--fork")
        sink = RQSink(shared_redis, queue_name, batch_size=BATCH, flush_interval_s=0.1)
        produce(sink, RECORDS)
        assert sink.close(timeout_s=10)
        wait_until(lambda: blocked_inserts(observer) == 1, 30, "a batch to be mid-store, waiting on the lock")

        # The job runs in a forked work horse, which RQ puts in a process group of its own.
        horses = [pid for pid in worker.children() if os.getpgid(pid) == pid]
        assert len(horses) == 1
        os.kill(horses[0], signal.SIGKILL)
        wait_until(lambda: b"terminated unexpectedly" in worker.log.read_bytes(), 20, "the worker to see its horse die")
        locker.rollback()

    wait_until(lambda: all_jobs_finished(shared_redis, queue_name), 30, "every job, retried one included, to finish")
    assert stored_requests(pg_url) == RECORDS
    queue = Queue(queue_name, connection=Redis.from_url(shared_redis), serializer=JSONSerializer)
    assert FailedJobRegistry(queue=queue).count == 0
    time.sleep(0.5)  # nothing late may add a duplicate
    assert stored_requests(pg_url) == RECORDS


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is dead, only not yet reaped


@pytest.mark.timeout(180)
def test_a_dead_workers_batch_comes_back_within_the_bound_and_nothing_of_it_lives_on(
    pg_url, shared_redis, queue_name, start_worker
) -> None:
    """The worker holding RQ's scheduler lock is killed with SIGKILL mid-batch, as ``kill -KILL`` does
    to the process a user sees: its scheduler child stops and lets the lock go, and the other worker
    retries the abandoned batch within :data:`RECOVERY_BOUND_S`, by RQ's own maintenance, in real time."""
    env = {"STAMPEDE_DATABASE_URL": pg_url, "STAMPEDE_REDIS_URL": shared_redis}
    dsn = pg_url.replace("+psycopg", "")
    connection = Redis.from_url(shared_redis)
    lock = f"rq:scheduler-lock:{queue_name}"
    with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as observer:
        locker.execute("LOCK TABLE requests IN SHARE MODE")
        first = start_worker(env, queue_name)
        wait_until(lambda: connection.get(lock) is not None, 30, "the first worker to take the scheduler lock")
        start_worker(env, queue_name)
        sink = RQSink(shared_redis, queue_name, batch_size=BATCH, flush_interval_s=0.1)
        produce(sink, RECORDS)
        assert sink.close(timeout_s=10)
        wait_until(lambda: blocked_inserts(observer) == 2, 30, "both workers to be mid-store, waiting on the lock")
        scheduler = first.children()
        assert len(scheduler) == 1
        held_by = connection.get(lock)
        os.kill(first.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.process.wait(timeout=10)
        locker.rollback()

    wait_until(lambda: not alive(scheduler[0]), 10, "the dead worker's scheduler to stop")
    assert connection.get(lock) != held_by  # released (then perhaps taken by the survivor), not left to expire
    wait_until(
        lambda: all_jobs_finished(shared_redis, queue_name),
        RECOVERY_BOUND_S,
        "every job, the abandoned one included, to finish",
        every_s=0.5,
    )
    recovered_s = time.monotonic() - killed_at
    assert stored_requests(pg_url) == RECORDS
    queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    assert FailedJobRegistry(queue=queue).count == 0
    print(f"abandoned batch stored {recovered_s:.1f} s after its worker was killed")  # shown with -s
