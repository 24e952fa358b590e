"""Sinks take records from the request path and deliver them, in batches, to the store jobs.

A sink never blocks a request: ``add_request`` appends to a buffer and, with one unbuffered write to
a local file, to the journal that outlives the process if it is killed (:mod:`loadgen.journal`). A
flusher greenlet hands batches to a delivery function, run in gevent's thread pool so database or
Redis I/O never stalls the event loop. Jobs are named by dotted path, so this process never imports
the worker code: the fleet sink enqueues them for RQ workers, the embedded sink hands them to a
child process that runs the very function an RQ worker would (:mod:`loadgen.embedded_sink`).

While deliveries fail, records wait in memory up to ``max_buffered_records``; past that, new jobs
are appended to a local JSONL spill file, and replayed from it in order once deliveries succeed
again (:mod:`loadgen.jobqueue`). Its files are named in :mod:`loadgen.sinkfiles`, its account of
an outage is :mod:`loadgen.outages`.

At the end of a run the sink waits for its store only while deliveries make progress: once none has
succeeded for a few seconds (``drain``), or at SIGTERM (``give_up``), it stops, writes every job it
still holds, in order, to one file (``stampede-spill-*.kept.jsonl``: the run, steps and samples as
well as the request rows) and says in one line how many records are there and the ``stampede replay``
command that delivers them.
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.threadpool import ThreadPool

from loadgen.jobqueue import JobQueue, QueuedJob
from loadgen.journal import Journal
from loadgen.outages import OutageLog
from loadgen.sinkfiles import SinkFiles, SpillFile, hold_lock, write_kept
from loadgen.storejobs import (
    STORE_LOADGEN_COUNTS,
    STORE_LOADGEN_SAMPLES,
    STORE_REQUESTS,
    STORE_RUN,
    STORE_STEP,
    records_in,
)
from stampede.records import LoadgenCountRecord, LoadgenSampleRecord, RequestRecord, RunRecord, StepRecord
from stampede.rows import encode_request, row_batch
from stampede.settings import Settings, known_secrets, redact

log = logging.getLogger(__name__)

# Deliveries that fail are retried with growing pauses up to this long, so a busy or restarting
# store delays records instead of losing them.
MAX_BACKOFF_S = 5.0
# How long a sink that gives up waits for the delivery under way: Redis's socket timeout (see
# loadgen.rq_sink) and a margin; the embedded store's child is killed, which ends its delivery at once.
STOP_DELIVERY_S = 7.0


_native_thread_id = monkey.get_original("_thread", "get_ident")


class DeliveryThread:
    """One native thread of the sink's own, for its whole life: a Redis or pipe connection made by a
    delivery is bound to the event loop of the thread that made it. The hub's shared pool retires
    threads idle for 5 s, so a delivery after a pause (a master between two steps) met its connection
    on a destroyed loop, and the sink logged a false outage."""

    def __init__(self) -> None:
        self._pool = ThreadPool(1)

    def apply(self, func: Any, args: tuple[Any, ...]) -> Any:
        """Run ``func(*args)`` in the thread; the calling greenlet waits, the event loop does not."""
        return self._pool.apply(func, args)

    def stop(self, timeout_s: float) -> None:
        """End the thread and return once it has ended, within ``timeout_s``.

        gevent's pool lets go of a thread before the thread has torn down its event loop: a process
        that then exited at once crashed in that teardown (SIGSEGV in greenlet, in about one Locust
        exit of two with gevent 26.9 and greenlet 3.5).
        """
        try:
            ident = self._pool.spawn(_native_thread_id).get(timeout=timeout_s)
        except gevent.Timeout:
            ident = None  # a delivery still hangs in it: nothing to wait for that would end
        self._pool.kill()
        deadline = time.monotonic() + timeout_s
        while ident in sys._current_frames() and time.monotonic() < deadline:
            gevent.sleep(0.01)


class Sink(ABC):
    """Batches records and delivers them in order from one flusher greenlet."""

    def __init__(
        self,
        batch_size: int,
        flush_interval_s: float,
        max_buffered_records: int = 20_000,
        spill_path: Path | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.files = SinkFiles.new(spill_path)
        self.spill_path = self.files.spill
        self.journal = Journal(self.files.segment)
        # Held while this sink lives, so `stampede replay` leaves its files alone.
        self._lock = hold_lock(self.files.lock)
        self.delivered_requests = 0
        self._secrets = known_secrets()
        self._buffer: list[str] = []
        self._buffer_since = 0.0
        self._queue = JobQueue(max_buffered_records, SpillFile(self.files))
        self._current: QueuedJob | None = None  # the job being delivered
        self._outage = OutageLog(self._secrets)
        # When a delivery last succeeded, or work arrived at an idle sink: drain() waits while this moves.
        self._progress_at = time.monotonic()
        self._cut_short = False
        self._closing = False
        self._closed = Event()
        self._stopping = Event()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self._delivery = DeliveryThread()
        self._flusher = gevent.spawn(self._run)

    def add_request(self, record: RequestRecord) -> None:
        """Queue one request record; never blocks."""
        if record.error is not None and (error := redact(record.error, self._secrets)) != record.error:
            record = record.model_copy(update={"error": error})
        if not self._buffer:
            self._buffer_since = time.monotonic()
        # Encoded now, once: a worker stores the text as it is (see stampede.rows).
        line = encode_request(record)
        self.journal.append(line)
        self._buffer.append(line)
        if len(self._buffer) >= self.batch_size:
            self._enqueue_buffer()

    def add_run(self, run: RunRecord) -> None:
        """Queue a run row write (after any records already queued); secrets in its config are masked."""
        self._put(STORE_RUN, redact(run.to_job_arg(), self._secrets))

    def add_step(self, step: StepRecord) -> None:
        """Queue a step row write (after any records already queued)."""
        self._put(STORE_STEP, step.to_job_arg())

    def add_loadgen_sample(self, sample: LoadgenSampleRecord) -> None:
        """Queue one health sample of this load-generating process."""
        self._put(STORE_LOADGEN_SAMPLES, [sample.to_job_arg()])

    def add_loadgen_counts(self, counts: list[LoadgenCountRecord]) -> None:
        """Queue this process's request counts per step (after the records they count)."""
        self._put(STORE_LOADGEN_COUNTS, [count.to_job_arg() for count in counts])

    def resend(self, job: str, arg: Any) -> None:
        """Queue a job as it was written to a spill file (see :mod:`loadgen.replay`)."""
        self._put(job, arg)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Deliver everything queued so far; True when all of it was delivered in time."""
        self._enqueue_buffer()
        return self._idle.wait(timeout_s)

    def drain(self, stall_s: float) -> bool:
        """Deliver everything queued so far, waiting as long as deliveries make progress: give up once
        none has succeeded for ``stall_s`` (so a second call after a stall returns at once), or, after
        :meth:`give_up` or Ctrl-C, as soon as deliveries fail. True when everything was delivered."""
        self._enqueue_buffer()
        try:
            while not self._idle.wait(0.1):
                if (self._outage.failing and self._cut_short) or time.monotonic() - self._progress_at >= stall_s:
                    return False
        except KeyboardInterrupt:
            self.give_up()
            return False
        return True

    def give_up(self) -> None:
        """Stop waiting for a store that fails (SIGTERM): what is not delivered is kept in a file at close.
        A store that is taking records still gets them."""
        self._cut_short = True

    def close(self, timeout_s: float | None = None, keep: bool = True) -> bool:
        """Flush, then stop the flusher; True when nothing was left undelivered. What was not delivered
        is written, in order, to one file named in the log (with ``keep=False``, for a caller that holds
        the jobs elsewhere, it is dropped). A second call (Locust quits again at SIGTERM) waits for the
        first to finish."""
        if self._closing:
            self._closed.wait(STOP_DELIVERY_S + 1.0)
            return self._idle.is_set()
        self._closing = True
        try:
            return self._close(timeout_s, keep)
        finally:
            self._closed.set()

    def _close(self, timeout_s: float | None, keep: bool) -> bool:
        delivered = self.flush(timeout_s)
        if not delivered:
            self._stop_delivering()
        self._flusher.kill()
        self._delivery.stop(STOP_DELIVERY_S)
        self._queue.spill.close()
        self._lock.close()
        if delivered:
            self.spill_path.unlink(missing_ok=True)
            self.files.lock.unlink(missing_ok=True)
        elif keep:
            self._keep()
        else:
            self._queue.spill.remove()
        return delivered

    def _stop_delivering(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._interrupt()
        self._flusher.join(STOP_DELIVERY_S)

    @abstractmethod
    def _interrupt(self) -> None:
        """End the delivery under way, if that can be done faster than waiting for it."""

    def _keep(self) -> None:
        """Write what is not delivered, in order (the job under way, then the queued ones), to one file."""
        current = [self._current] if self._current is not None else []
        jobs = [(job, arg) for job, arg, _ in current] + self._queue.held()
        records = sum(records_in(job, arg) for job, arg in jobs)
        kept = self.files.kept
        try:
            write_kept(kept, jobs)
        except OSError as exc:
            log.error("%d records not stored, nor written to %s (%s): see the files beside it", records, kept, exc)
            return
        # Safe on disk in the kept file now: the copies the sink kept while it ran go.
        for *_, segment in [*current, *self._queue.in_memory()]:
            self.journal.discard(segment)
        self._queue.spill.remove()
        requests = sum(records_in(job, arg) for job, arg in jobs if job == STORE_REQUESTS)
        log.error(
            "%d records not stored (%d requests, %d run, step and sample rows; %s): kept in %s; "
            "deliver them with `stampede replay %s`",
            records,
            requests,
            records - requests,
            self._outage.last_failure or "the store did not answer in time",
            kept,
            kept,
        )

    def _enqueue_buffer(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._put(STORE_REQUESTS, row_batch(batch), self.journal.seal())

    def _put(self, job: str, arg: Any, segment: Path | None = None) -> None:
        if self._idle.is_set():
            self._progress_at = time.monotonic()
        self._idle.clear()
        first_spilled = self._queue.spill.unread == 0
        if self._queue.put(job, arg, segment):
            if first_spilled:
                log.warning(
                    "%d records waiting (the store is away or slower than the load); spilling further ones to %s",
                    self._queue.records,
                    self.spill_path,
                )
            self.journal.discard(segment)  # its rows are in the spill file now
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self._queue.take()
            if job is None:
                self._idle.set()
                self._wake.clear()
                wait_s = self.flush_interval_s
                if self._buffer:
                    wait_s -= time.monotonic() - self._buffer_since
                if not self._wake.wait(max(0.0, wait_s)) and self._buffer:
                    self._enqueue_buffer()
                continue
            self._current = job
            if not self._deliver_with_retry(*job):
                return  # given up: close() keeps the job under way with the rest
            self._current = None

    def _deliver_with_retry(self, job: str, arg: Any, kept_in: Path | None) -> bool:
        pause_s = 0.1
        while True:
            failure = self._delivery.apply(self._try_deliver, (job, arg))
            if failure is not None:
                self._outage.failed(job, failure)
                if self._stopping.wait(pause_s):
                    return False
                pause_s = min(MAX_BACKOFF_S, pause_s * 2)
                continue
            self._progress_at = time.monotonic()
            self._outage.succeeded(self._queue.records, self._queue.spill.unread)
            if job == STORE_REQUESTS:
                self.delivered_requests += arg["count"]
            self.journal.discard(kept_in)
            return True

    def _try_deliver(self, job: str, arg: Any) -> Exception | None:
        # Returned, not raised: gevent's pool would print the traceback of a raised one to stderr.
        try:
            self._deliver(job, arg)
        except Exception as exc:  # any store failure: the flusher keeps the batch and tries again
            return exc
        return None

    @abstractmethod
    def _deliver(self, job: str, arg: Any) -> None:
        """Deliver one job's argument; runs in a worker thread, raises on failure."""


def make_sink(settings: Settings) -> Sink:
    """The fleet sink when Redis is configured, else the embedded one."""
    # Imported here: both modules import this one.
    if settings.redis_url is not None:
        from loadgen.rq_sink import RQSink

        return RQSink(
            settings.redis_url.get_secret_value(),
            settings.queue_name,
            settings.batch_size,
            settings.flush_interval_s,
        )
    from loadgen.embedded_sink import EmbeddedSink

    return EmbeddedSink(settings.batch_size, settings.flush_interval_s)
