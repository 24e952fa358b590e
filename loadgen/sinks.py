"""Sinks take records from the request path and deliver them, in batches, to the store jobs.

A sink never blocks a request: ``add_request`` only appends to a buffer. A flusher greenlet hands
batches to a delivery function, run in gevent's thread pool so database or Redis I/O never stalls
the event loop. Jobs are named by dotted path, so this process never imports the worker code
unless it is the in-process sink, which calls the very function an RQ worker would run.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import gevent
import orjson
from gevent.event import Event
from gevent.queue import Queue
from rq.utils import import_attribute

from stampede.records import RequestRecord, RunRecord, StepRecord

STORE_REQUESTS = "workers.jobs.store_request_records"
STORE_RUN = "workers.jobs.store_run"
STORE_STEP = "workers.jobs.store_step"

log = logging.getLogger(__name__)

# Deliveries that fail are retried with growing pauses up to this long, so a busy or restarting
# store delays records instead of losing them.
MAX_BACKOFF_S = 5.0


class Sink(ABC):
    """Batches records and delivers them in order from one flusher greenlet."""

    def __init__(self, batch_size: int, flush_interval_s: float) -> None:
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.delivered_requests = 0
        self._buffer: list[dict[str, Any]] = []
        self._jobs: Queue[tuple[str, Any]] = Queue()
        self._idle = Event()
        self._idle.set()
        self._flusher = gevent.spawn(self._run)

    def add_request(self, record: RequestRecord) -> None:
        """Queue one request record; never blocks."""
        self._buffer.append(record.to_job_arg())
        if len(self._buffer) >= self.batch_size:
            self._enqueue_buffer()

    def add_run(self, run: RunRecord) -> None:
        """Queue a run row write (after any records already queued)."""
        self._put(STORE_RUN, run.to_job_arg())

    def add_step(self, step: StepRecord) -> None:
        """Queue a step row write (after any records already queued)."""
        self._put(STORE_STEP, step.to_job_arg())

    def flush(self, timeout_s: float | None = None) -> bool:
        """Deliver everything queued so far; True when all of it was delivered in time."""
        self._enqueue_buffer()
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush, then stop the flusher; True when nothing was left undelivered."""
        delivered = self.flush(timeout_s)
        self._flusher.kill()
        return delivered

    def _enqueue_buffer(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._put(STORE_REQUESTS, batch)

    def _put(self, job: str, arg: Any) -> None:
        self._idle.clear()
        self._jobs.put((job, arg))

    def _run(self) -> None:
        while True:
            try:
                job, arg = self._jobs.get(timeout=self.flush_interval_s)
            except gevent.queue.Empty:
                self._enqueue_buffer()
                continue
            self._deliver_with_retry(job, arg)
            if self._jobs.empty() and not self._buffer:
                self._idle.set()

    def _deliver_with_retry(self, job: str, arg: Any) -> None:
        pause_s = 0.1
        while True:
            try:
                gevent.get_hub().threadpool.apply(self._deliver, (job, arg))
            except Exception as exc:  # any store failure: keep the batch and try again
                log.warning("could not deliver %s (%s); retrying in %.1f s", job, exc, pause_s)
                gevent.sleep(pause_s)
                pause_s = min(MAX_BACKOFF_S, pause_s * 2)
                continue
            if job == STORE_REQUESTS:
                self.delivered_requests += len(arg)
            return

    @abstractmethod
    def _deliver(self, job: str, arg: Any) -> None:
        """Deliver one job's argument; runs in a worker thread, raises on failure."""


class InProcessSink(Sink):
    """Embedded mode: runs the store jobs in this process, against the configured database."""

    def _deliver(self, job: str, arg: Any) -> None:
        # The JSON round trip gives the job exactly what it would receive from RQ's JSON serializer.
        import_attribute(job)(orjson.loads(orjson.dumps(arg)))
