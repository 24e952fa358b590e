"""Fleet mode: a sink that enqueues each batch as an RQ job, for workers on any host to store.

Jobs are enqueued by dotted name with RQ's JSON serializer, so this process never imports the
worker code and Redis never holds a pickle. Each job carries an explicit timeout and a ``Retry``:
a batch whose worker dies or whose database is briefly away runs again, and the store ignores rows
it already has, so a retry never doubles one.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from loadgen.sinks import Sink
from loadgen.storejobs import records_in

# A 5,000-record batch stores in tens of milliseconds; 30 s covers a slow, busy database, and bounds how
# long a batch a dead worker held waits before it is retried (workers/worker_classes.py).
JOB_TIMEOUT_S = 30
# Six more tries over about four minutes (231 s), enough to ride out a database restart.
JOB_RETRY = Retry(max=6, interval=[1, 5, 15, 30, 60, 120])
# Results are only a count; failed jobs are kept a week so an operator can requeue them.
RESULT_TTL_S = 600
FAILURE_TTL_S = 7 * 24 * 3600
# Short socket timeouts: a delivery to a dead Redis should fail fast and let the sink buffer.
SOCKET_TIMEOUT_S = 5.0


class RQSink(Sink):
    """Enqueues one RQ job per batch on ``queue_name``; buffers and spills while Redis is away."""

    def __init__(
        self,
        redis_url: str,
        queue_name: str,
        batch_size: int,
        flush_interval_s: float,
        max_buffered_records: int = 20_000,
        spill_path: Path | None = None,
    ) -> None:
        connection = Redis.from_url(redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
        self.queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        super().__init__(batch_size, flush_interval_s, max_buffered_records, spill_path)

    def _interrupt(self) -> None:
        """Nothing to cut: a delivery under way ends within the socket timeout."""

    def _deliver(self, job: str, arg: Any) -> None:
        records = records_in(job, arg)
        self.queue.enqueue(
            job,
            arg,
            job_timeout=JOB_TIMEOUT_S,
            retry=JOB_RETRY,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            # Workers log the description; the default one would print the whole batch.
            description=f"{job} ({records} record{'' if records == 1 else 's'})",
            # Every Redis key of a job then names its queue, so one queue's keys can be found and removed.
            job_id=f"{self.queue.name}-{uuid.uuid4().hex}",
        )


def requeue_failed(redis_url: str, queue_name: str) -> int:
    """Put every job RQ gave up on (the queue's failed-job registry) back on the queue, for a worker to
    run again once its store is back; returns how many. Stores ignore rows they already hold, so a job
    that had partly reached the store, or one requeued twice, adds nothing twice."""
    connection = Redis.from_url(redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
    registry = Queue(queue_name, connection=connection, serializer=JSONSerializer).failed_job_registry
    job_ids = registry.get_job_ids()
    for job_id in job_ids:
        registry.requeue(job_id)
    return len(job_ids)
