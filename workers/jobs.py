"""RQ jobs. Module-level verbs with JSON-able arguments, validated on entry.

The Locust process names these by dotted path (``"workers.jobs.store_request_rows"``): an RQ
worker runs them in a fleet, and the embedded in-process sink calls the very same functions.
"""

from __future__ import annotations

from typing import Any

from stampede import store
from stampede.db import settings_session
from stampede.records import LoadgenCountRecord, LoadgenSampleRecord, RequestRecord, RunRecord, StepRecord
from stampede.rows import RowBatch


def store_request_rows(batch: RowBatch) -> int:
    """Store a batch of request rows (see :mod:`stampede.rows`); returns how many were new (retries
    add none). A batch that cannot be stored fails as a whole, naming its bad line and column."""
    with settings_session() as session, session.begin():
        return store.insert_request_rows(session, batch)


def store_request_records(records: list[dict[str, Any]]) -> int:
    """Store request records sent as one JSON object each, by Locust processes of versions before
    row batches (and in their spill files): validated, encoded as rows, stored the same way."""
    parsed = [RequestRecord.model_validate(r) for r in records]
    with settings_session() as session, session.begin():
        return store.insert_request_records(session, parsed)


def store_run(run: dict[str, Any]) -> None:
    """Create or update a run row."""
    parsed = RunRecord.model_validate(run)
    with settings_session() as session, session.begin():
        store.upsert_run(session, parsed)


def store_step(step: dict[str, Any]) -> None:
    """Create or update a step row."""
    parsed = StepRecord.model_validate(step)
    with settings_session() as session, session.begin():
        store.upsert_step(session, parsed)


def store_loadgen_counts(counts: list[dict[str, Any]]) -> None:
    """Validate and record load-generating processes' request counts per step (a count never goes down)."""
    parsed = [LoadgenCountRecord.model_validate(c) for c in counts]
    with settings_session() as session, session.begin():
        store.upsert_loadgen_counts(session, parsed)


def store_loadgen_samples(samples: list[dict[str, Any]]) -> int:
    """Validate and store load-generator health samples; returns how many were new."""
    parsed = [LoadgenSampleRecord.model_validate(s) for s in samples]
    with settings_session() as session, session.begin():
        return store.insert_loadgen_samples(session, parsed)
