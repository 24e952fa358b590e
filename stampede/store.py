"""Writes to the results store. Functions take a Session; the caller owns the transaction.

Every write is idempotent: request rows are keyed by the record's UUID and duplicates are ignored,
runs and steps are upserts, so a retried job never doubles a row.

Request rows arrive as a :class:`stampede.rows.RowBatch`, COPY text made by the process that
measured them. On PostgreSQL that text goes to ``COPY`` as it is; if any of its rows is already
stored (a retried batch), the COPY fails as a whole and the batch goes through a per-connection
temporary table and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` instead, which COPY alone
cannot do. SQLite decodes the rows and runs one ``INSERT ... ON CONFLICT DO NOTHING`` over all of
them (the driver's ``executemany``), compiled once and cached: a multi-row ``VALUES`` statement,
compiled anew for every batch, took twelve times as long (``bench/ingest.py --sqlite``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from stampede.records import (
    LoadgenCountRecord,
    LoadgenSampleRecord,
    RequestRecord,
    RunRecord,
    RunStatus,
    StepRecord,
    utc_now,
)
from stampede.rows import RowBatch, check_batch, decode_rows, encode_batch
from stampede.samples import GpuSampleRecord, RuntimeSampleRecord
from stampede.schema import Base, GpuSample, LoadgenCount, LoadgenSample, Request, Run, RuntimeSample, Step

# Emptied at each commit, so a batch never sees rows of another, even one that was rolled back.
_INCOMING_REQUESTS = "stampede_incoming_requests"


def dialect_insert(session: Session, table: type[Base]) -> Any:
    """An ``INSERT`` into ``table`` in the session's dialect, which alone offers ``ON CONFLICT``
    (PostgreSQL's or SQLite's); the one place that picks it, for every upsert of the package."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def insert_request_rows(session: Session, batch: RowBatch) -> int:
    """Insert a batch of request rows, ignoring ones already stored; returns how many were new.

    Raises :class:`stampede.rows.InvalidRows` (or the driver's error, on PostgreSQL) for a batch
    that cannot be stored; nothing of it is then stored, as the caller's transaction rolls back.
    """
    batch = check_batch(batch)
    if session.get_bind().dialect.name == "postgresql":
        return _copy_request_rows(session, batch)
    rows = decode_rows(batch)
    if not rows:
        return 0
    stmt = dialect_insert(session, Request).on_conflict_do_nothing(index_elements=["id"])  # refuses other databases
    result: CursorResult[Any] = session.connection().execute(stmt, rows)
    return result.rowcount


def insert_request_records(session: Session, records: Iterable[RequestRecord]) -> int:
    """Insert records, ignoring ones already stored; returns how many rows were new."""
    return insert_request_rows(session, encode_batch(records))


def _copy_request_rows(session: Session, batch: RowBatch) -> int:
    if batch["count"] == 0:
        return 0
    names = ", ".join(batch["columns"])
    # The psycopg connection under the session's, so COPY joins the caller's transaction.
    dbapi_connection = session.connection().connection.driver_connection
    assert dbapi_connection is not None
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SAVEPOINT stampede_copy")
        try:
            _copy_text(cursor, Request.__tablename__, names, batch["rows"])
        except UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT stampede_copy")
        else:
            cursor.execute("RELEASE SAVEPOINT stampede_copy")
            return batch["count"]
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING_REQUESTS} "
            f"(LIKE {Request.__tablename__} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        _copy_text(cursor, _INCOMING_REQUESTS, names, batch["rows"])
        cursor.execute(
            f"INSERT INTO {Request.__tablename__} SELECT * FROM {_INCOMING_REQUESTS} ON CONFLICT (id) DO NOTHING"
        )
        stored: int = cursor.rowcount
        # Emptied now too, not only at commit: a caller may store several batches in one transaction.
        cursor.execute(f"TRUNCATE {_INCOMING_REQUESTS}")
    return stored


def _copy_text(cursor: Any, table: str, names: str, rows: str) -> None:
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        copy.write(rows)


def upsert_run(session: Session, run: RunRecord) -> None:
    """Create the run row or update its status, end time and config."""
    values = run.model_dump(exclude_computed_fields=True)
    values["status"] = run.status.value
    stmt = dialect_insert(session, Run).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "status": stmt.excluded.status,
            "ended_at": stmt.excluded.ended_at,
            "config": stmt.excluded.config,
        },
    )
    session.execute(stmt)


def mark_stopped_unless_complete(session: Session, run_id: uuid.UUID, steps: int) -> None:
    """Mark ``run_id`` stopped (and ended now, if no end is stored) unless ``steps`` of its steps ended."""
    ended = session.scalar(select(func.count()).where(Step.run_id == run_id, Step.ended_at.is_not(None)))
    if ended is not None and ended >= steps:
        return
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(status=RunStatus.STOPPED.value, ended_at=func.coalesce(Run.ended_at, utc_now()))
    )


def upsert_step(session: Session, step: StepRecord) -> None:
    """Create the step row or record its end."""
    values = step.model_dump(exclude_computed_fields=True)
    values["api"] = step.api.value
    stmt = dialect_insert(session, Step).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "target", "index"],
        set_={c: stmt.excluded[c] for c in ("users", "ended_at", "lost_workers", "lost_at", "users_left")},
    )
    session.execute(stmt)


def insert_gpu_samples(session: Session, samples: Sequence[GpuSampleRecord]) -> int:
    """Insert GPU readings in one multi-row statement; returns how many rows were written."""
    if not samples:
        return 0
    rows = [s.model_dump() | {"processes": [p.model_dump() for p in s.processes]} for s in samples]
    session.execute(dialect_insert(session, GpuSample).values(rows))
    return len(rows)


def insert_runtime_samples(session: Session, samples: Sequence[RuntimeSampleRecord]) -> int:
    """Insert scraped runtime values in one multi-row statement; returns how many rows were written."""
    if not samples:
        return 0
    session.execute(dialect_insert(session, RuntimeSample).values([s.model_dump() for s in samples]))
    return len(samples)


def upsert_loadgen_counts(session: Session, counts: Sequence[LoadgenCountRecord]) -> None:
    """Record each process's request count per step; a count never goes down (a late, replayed or
    retried job with an older count leaves the newer one)."""
    # SQLite's two-argument max() is PostgreSQL's greatest().
    larger = func.max if session.get_bind().dialect.name == "sqlite" else func.greatest
    for count in counts:
        stmt = dialect_insert(session, LoadgenCount).values(count.model_dump())
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "target", "step_index", "host", "pid"],
            set_={"requests": larger(LoadgenCount.requests, stmt.excluded.requests)},
        )
        session.execute(stmt)


def insert_loadgen_samples(session: Session, samples: Sequence[LoadgenSampleRecord]) -> int:
    """Insert load-generator health samples, ignoring ones already stored; returns how many were new."""
    if not samples:
        return 0
    rows = [sample.model_dump() for sample in samples]
    stmt = dialect_insert(session, LoadgenSample).values(rows).on_conflict_do_nothing(index_elements=["id"])
    result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]  # an INSERT gives a cursor
    return result.rowcount
