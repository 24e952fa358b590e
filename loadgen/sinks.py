"""Sinks take records from the request path and deliver them, in batches, to the store jobs.

A sink never blocks a request: ``add_request`` appends to a buffer and, with one unbuffered write to
a local file, to the journal that outlives the process if it is killed (:mod:`loadgen.journal`). A
flusher greenlet hands batches to a delivery function, run in gevent's thread pool so database or
Redis I/O never stalls the event loop. Jobs are named by dotted path, so this process never imports
the worker code: the fleet sink enqueues them for RQ workers, the embedded sink hands them to a
child process that runs the very function an RQ worker would (:mod:`loadgen.embedded_sink`).

While deliveries fail, records wait in memory up to ``max_buffered_records``; past that, new jobs
are appended to a local JSONL spill file, and replayed from it in order once deliveries succeed
again. Jobs leave in the order they were added, so a run's final status is never overwritten by
an earlier one replayed late.

At the end of a run the sink waits for its store only while deliveries make progress: once none has
succeeded for a few seconds (``drain``), or at SIGTERM (``give_up``), it stops, writes every job it
still holds, in order, to one file (``stampede-spill-*.kept.jsonl``: the run, steps and samples as
well as the request rows) and says in one line how many records are there and the ``stampede replay``
command that delivers them.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import IO, Any

import gevent
import orjson
from gevent.event import Event
from gevent.threadpool import ThreadPool

from loadgen.journal import Journal, hold_lock, lock_path
from loadgen.redaction import known_secrets, redact
from stampede.records import LoadgenCountRecord, LoadgenSampleRecord, RequestRecord, RunRecord, StepRecord
from stampede.rows import encode_request, row_batch
from stampede.settings import Settings

STORE_REQUESTS = "workers.jobs.store_request_rows"
STORE_RUN = "workers.jobs.store_run"
STORE_STEP = "workers.jobs.store_step"
STORE_LOADGEN_SAMPLES = "workers.jobs.store_loadgen_samples"
STORE_LOADGEN_COUNTS = "workers.jobs.store_loadgen_counts"


log = logging.getLogger(__name__)

# Deliveries that fail are retried with growing pauses up to this long, so a busy or restarting
# store delays records instead of losing them.
MAX_BACKOFF_S = 5.0
# How long a sink that gives up waits for the delivery under way: Redis's socket timeout (see
# loadgen.rq_sink) and a margin; the embedded store's child is killed, which ends its delivery at once.
STOP_DELIVERY_S = 7.0


def _records_in(job: str, arg: Any) -> int:
    return int(arg["count"]) if job == STORE_REQUESTS else 1


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
        self.max_buffered_records = max_buffered_records
        # Names unique to this sink even where process ids repeat (a container's first process).
        owner = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.spill_path = spill_path or Path(tempfile.gettempdir()) / f"stampede-spill-{owner}.jsonl"
        self.journal = Journal(self.spill_path.parent, f"stampede-journal-{owner}")
        # Held while this sink lives, so `stampede replay` leaves its files alone.
        self._lock_path = lock_path(self.spill_path.parent, owner)
        self._lock = hold_lock(self._lock_path)
        self.delivered_requests = 0
        self._secrets = known_secrets()
        self._buffer: list[str] = []
        self._buffer_since = 0.0
        # Each job with the file that keeps it on disk (its rows' journal segment), removed once the
        # job is delivered.
        self._jobs: deque[tuple[str, Any, Path | None]] = deque()
        self._buffered_records = 0
        self._spill_writer: IO[bytes] | None = None
        self._spill_reader: IO[bytes] | None = None
        self._spilled_jobs = 0
        self._drained = 0
        self._current: tuple[str, Any, Path | None] | None = None  # the job being delivered
        self._failing = False
        self._last_failure = ""
        # When a delivery last succeeded, or work arrived at an idle sink: drain() waits while this moves.
        self._progress_at = time.monotonic()
        self._cut_short = False
        self._closing = False
        self._closed = Event()
        self._stopping = Event()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        # One thread of the sink's own, for its whole life: a Redis or pipe connection made by a delivery
        # is bound to the event loop of the thread that made it. The hub's shared pool retires threads
        # idle for 5 s, so a delivery after a pause (a master between two steps) met its connection on
        # a destroyed loop, and the sink logged a false outage.
        self._delivery = ThreadPool(1)
        self._flusher = gevent.spawn(self._run)

    def add_request(self, record: RequestRecord) -> None:
        """Queue one request record; never blocks."""
        if record.error is not None and (error := self._redact(record.error)) != record.error:
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
        self._put(STORE_RUN, self._redact(run.to_job_arg()))

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
                if (self._failing and self._cut_short) or time.monotonic() - self._progress_at >= stall_s:
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
        self._delivery.kill()
        for stream in (self._spill_writer, self._spill_reader):
            if stream is not None:
                stream.close()
        self._lock.close()
        if delivered:
            self.spill_path.unlink(missing_ok=True)
            self._lock_path.unlink(missing_ok=True)
        elif keep:
            self._keep()
        else:
            for path in self._spill_files():
                path.unlink(missing_ok=True)
        return delivered

    def _stop_delivering(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._interrupt()
        self._flusher.join(STOP_DELIVERY_S)

    @abstractmethod
    def _interrupt(self) -> None:
        """End the delivery under way, if that can be done faster than waiting for it."""

    def _spill_files(self) -> list[Path]:
        drained = self.spill_path.parent.glob(f"{self.spill_path.stem}.drained-*.jsonl")
        return [*drained, *([self.spill_path] if self.spill_path.exists() else [])]

    def _held_jobs(self) -> list[tuple[str, Any]]:
        """What is not delivered, in order: the job under way, those in memory, the spilled ones."""
        held = [*([self._current] if self._current is not None else []), *self._jobs]
        jobs = [(job, arg) for job, arg, _ in held]
        if self._spilled_jobs:
            with self.spill_path.open("rb") as spilled:
                lines = spilled.read().splitlines()
            # The reader had taken the first ones and delivered all but the one under way.
            for line in lines[len(lines) - self._spilled_jobs :]:
                entry = orjson.loads(line)
                jobs.append((entry["job"], entry["arg"]))
        return jobs

    def _keep(self) -> None:
        jobs = self._held_jobs()
        records = sum(_records_in(job, arg) for job, arg in jobs)
        kept = self.spill_path.with_name(f"{self.spill_path.stem}.kept.jsonl")
        try:
            with kept.open("wb") as out:
                out.writelines(orjson.dumps({"job": job, "arg": arg}) + b"\n" for job, arg in jobs)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            log.error("%d records not stored, nor written to %s (%s): see the files beside it", records, kept, exc)
            return
        # Safe on disk in the kept file now: the copies the sink kept while it ran go.
        for segment in [*([self._current[2]] if self._current is not None else []), *(s for *_, s in self._jobs)]:
            self.journal.discard(segment)
        for path in self._spill_files():
            path.unlink(missing_ok=True)
        requests = sum(_records_in(job, arg) for job, arg in jobs if job == STORE_REQUESTS)
        log.error(
            "%d records not stored (%d requests, %d run, step and sample rows; %s): kept in %s; "
            "deliver them with `stampede replay %s`",
            records,
            requests,
            records - requests,
            self._last_failure or "the store did not answer in time",
            kept,
            kept,
        )

    def _redact(self, value: Any) -> Any:
        return redact(value, self._secrets)

    def _enqueue_buffer(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._put(STORE_REQUESTS, row_batch(batch), self.journal.seal())

    def _put(self, job: str, arg: Any, segment: Path | None = None) -> None:
        if self._idle.is_set():
            self._progress_at = time.monotonic()
        self._idle.clear()
        size = _records_in(job, arg)
        if self._spilled_jobs == 0 and self._buffered_records + size <= self.max_buffered_records:
            self._jobs.append((job, arg, segment))
            self._buffered_records += size
        else:
            self._spill(job, arg)
            self.journal.discard(segment)
        self._wake.set()

    def _spill(self, job: str, arg: Any) -> None:
        if self._spill_writer is None:
            log.warning(
                "%d records waiting (the store is away or slower than the load); spilling further ones to %s",
                self._buffered_records,
                self.spill_path,
            )
            self._spill_writer = self.spill_path.open("ab")
        self._spill_writer.write(orjson.dumps({"job": job, "arg": arg}) + b"\n")
        # Written through, so a process that dies during an outage leaves its records in the file.
        self._spill_writer.flush()
        self._spilled_jobs += 1

    def _next_job(self) -> tuple[str, Any, Path | None] | None:
        if self._jobs:
            job, arg, segment = self._jobs.popleft()
            self._buffered_records -= _records_in(job, arg)
            return job, arg, segment
        if self._spilled_jobs == 0:
            return None
        if self._spill_reader is None:
            self._spill_reader = self.spill_path.open("rb")
        entry = orjson.loads(self._spill_reader.readline())
        self._spilled_jobs -= 1
        if self._spilled_jobs == 0:
            # Drained: later jobs go back to memory, and the next outage starts a fresh file. This
            # one keeps the last job on disk, under another name, until that job is delivered.
            self._spill_reader.close()
            self._spill_writer.close()
            self._spill_reader = self._spill_writer = None
            self._drained += 1
            drained = self.spill_path.with_name(f"{self.spill_path.stem}.drained-{self._drained}.jsonl")
            return entry["job"], entry["arg"], self.spill_path.rename(drained)
        return entry["job"], entry["arg"], None

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self._next_job()
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
                # Redacted and cut short: a driver's message may quote a URL or a whole batch.
                first_line = (self._redact(str(failure)).splitlines() or [""])[0]
                self._last_failure = f"{type(failure).__name__}: {first_line[:200]}"
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "could not deliver %s (%s); buffering and retrying until the store is back",
                        job,
                        self._last_failure,
                    )
                if self._stopping.wait(pause_s):
                    return False
                pause_s = min(MAX_BACKOFF_S, pause_s * 2)
                continue
            self._progress_at = time.monotonic()
            if self._failing:
                self._failing = False
                log.warning(
                    "store reachable again; delivering %d buffered records and %d spilled jobs",
                    self._buffered_records,
                    self._spilled_jobs,
                )
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
