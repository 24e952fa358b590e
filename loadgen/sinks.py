"""Sinks take records from the request path and deliver them, in batches, to the store jobs.

A sink never blocks a request: ``add_request`` appends to a buffer and, with one unbuffered write to
a local file, to the journal that outlives the process if it is killed (:mod:`loadgen.journal`). A
flusher greenlet hands batches to a delivery function, run in gevent's thread pool so database or
Redis I/O never stalls the event loop. Jobs are named by dotted path, so this process never imports
the worker code: the fleet sink enqueues them for RQ workers, the embedded sink hands them to a
child process that runs the very function an RQ worker would (see :mod:`loadgen.store_process`).

While deliveries fail, records wait in memory up to ``max_buffered_records``; past that, new jobs
are appended to a local JSONL spill file, and replayed from it in order once deliveries succeed
again. Jobs leave in the order they were added, so a run's final status is never overwritten by
an earlier one replayed late.
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
from urllib.parse import quote

import gevent
import orjson
from gevent.event import Event
from sqlalchemy.engine import make_url

from loadgen.journal import SUFFIX as JOURNAL_SUFFIX
from loadgen.journal import Journal, hold_lock, lock_path
from loadgen.store_process import StoreProcess
from stampede.records import LoadgenSampleRecord, RequestRecord, RunRecord, StepRecord
from stampede.rows import encode_request, row_batch
from stampede.settings import Settings, get_settings

STORE_REQUESTS = "workers.jobs.store_request_rows"
STORE_RUN = "workers.jobs.store_run"
STORE_STEP = "workers.jobs.store_step"
STORE_LOADGEN_SAMPLES = "workers.jobs.store_loadgen_samples"

REDACTED = "**********"
MIN_SECRET_CHARS = 4

log = logging.getLogger(__name__)

# Deliveries that fail are retried with growing pauses up to this long, so a busy or restarting
# store delays records instead of losing them.
MAX_BACKOFF_S = 5.0


def known_secrets() -> list[str]:
    """This process's secrets (API key, database and Redis passwords), to scrub from what it sends."""
    settings = get_settings()
    urls = [settings.database_url.get_secret_value()]
    if settings.redis_url is not None:
        urls.append(settings.redis_url.get_secret_value())
    found = [settings.api_key.get_secret_value()] if settings.api_key is not None else []
    for url in urls:
        password = make_url(url).password
        if password:
            # As written in the URL (percent-encoded) and as the server sees it.
            found += [str(password), quote(str(password), safe="")]
    # Masking a secret of a few characters would garble every string it occurs in.
    return sorted({s for s in found if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


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
        self._failing = False
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
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

    def resend(self, job: str, arg: Any) -> None:
        """Queue a job as it was written to a spill file (see :mod:`loadgen.replay`)."""
        self._put(job, arg)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Deliver everything queued so far; True when all of it was delivered in time."""
        self._enqueue_buffer()
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush, then stop the flusher; True when nothing was left undelivered."""
        delivered = self.flush(timeout_s)
        self._flusher.kill()
        if self._spill_writer is not None:
            self._spill_writer.close()
        if self._spill_reader is not None:
            self._spill_reader.close()
        self._lock.close()
        if delivered:
            self.spill_path.unlink(missing_ok=True)
            self._lock_path.unlink(missing_ok=True)
        else:
            left = [*self.journal.directory.glob(f"{self.journal.name}-*{JOURNAL_SUFFIX}")]
            left += self.spill_path.parent.glob(f"{self.spill_path.stem}.drained-*.jsonl")
            if self.spill_path.exists():
                left.append(self.spill_path)
            log.error(
                "sink closed undelivered: what it holds stays in %s (deliver it with `stampede replay`)",
                ", ".join(sorted(str(p) for p in left)),
            )
        return delivered

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact(v) for v in value]
        return value

    def _enqueue_buffer(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._put(STORE_REQUESTS, row_batch(batch), self.journal.seal())

    def _put(self, job: str, arg: Any, segment: Path | None = None) -> None:
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
        while True:
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
            self._deliver_with_retry(*job)

    def _deliver_with_retry(self, job: str, arg: Any, kept_in: Path | None) -> None:
        pause_s = 0.1
        while True:
            failure = gevent.get_hub().threadpool.apply(self._try_deliver, (job, arg))
            if failure is not None:
                if not self._failing:
                    self._failing = True
                    # Redacted and cut short: a driver's message may quote a URL or a whole batch.
                    log.warning(
                        "could not deliver %s (%s: %s); buffering and retrying until the store is back",
                        job,
                        type(failure).__name__,
                        self._redact(str(failure))[:200],
                    )
                gevent.sleep(pause_s)
                pause_s = min(MAX_BACKOFF_S, pause_s * 2)
                continue
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
            return

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


class EmbeddedSink(Sink):
    """Embedded mode: the store jobs run in a child process, against the configured database.

    The child decodes each job's JSON, so a job gets exactly what it would from RQ's JSON serializer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._store = StoreProcess()
        super().__init__(*args, **kwargs)
        # The child's start (a second of imports, and the database's first connection) happens now,
        # with an empty batch, rather than with the first records while the load runs, where it
        # took a core the load generator needed. A caller that waits on flush() knows it is over.
        self._put(STORE_REQUESTS, row_batch([]))

    def close(self, timeout_s: float | None = None) -> bool:
        delivered = super().close(timeout_s)
        self._store.stop()
        return delivered

    def _deliver(self, job: str, arg: Any) -> None:
        self._store.run(job, arg)


def make_sink(settings: Settings) -> Sink:
    """The fleet sink when Redis is configured, else the embedded one."""
    if settings.redis_url is not None:
        from loadgen.rq_sink import RQSink  # imports this module: only here, once it is loaded

        return RQSink(
            settings.redis_url.get_secret_value(),
            settings.queue_name,
            settings.batch_size,
            settings.flush_interval_s,
        )
    return EmbeddedSink(settings.batch_size, settings.flush_interval_s)
