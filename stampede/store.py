"""Writes to the results store. Functions take a Session; the caller owns the transaction.

Every write is idempotent: request rows are keyed by the record's UUID and duplicates are ignored,
runs and steps are upserts, so a retried job never doubles a row.

On PostgreSQL request rows go in by COPY into a per-connection temporary table followed by one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: COPY is the fastest way in, and the second statement
keeps the insert idempotent, which COPY alone cannot. SQLite gets multi-row INSERTs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from psycopg.errors import UniqueViolation
from sqlalchemy import CursorResult
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from stampede import metrics
from stampede.records import LoadgenSampleRecord, RequestRecord, RunRecord, StepRecord
from stampede.samples import GpuSampleRecord, RuntimeSampleRecord
from stampede.schema import Base, GpuSample, LoadgenSample, Request, Run, RuntimeSample, Step

# SQLite allows 32,766 bound parameters per statement; 27 columns x 1,000 rows stays well under it.
ROWS_PER_STATEMENT = 1000

# Emptied at each commit, so a batch never sees rows of another, even one that was rolled back.
_INCOMING_REQUESTS = "stampede_incoming_requests"

# The ``requests`` columns with their PostgreSQL types for binary COPY, which sends values unconverted.
# The JSON column travels as text: the binary form of ``json`` is its text.
REQUEST_COLUMNS = {
    "id": "uuid",
    "run_id": "uuid",
    "target": "text",
    "step_index": "int4",
    "in_warmup": "bool",
    "host": "text",
    "pid": "int4",
    "api": "text",
    "model": "text",
    "prompt_id": "text",
    "outcome": "text",
    "http_status": "int4",
    "server_request_id": "text",
    "error": "text",
    "started_at": "timestamptz",
    "ttft_ms": "float8",
    "e2e_ms": "float8",
    "tpot_ms": "float8",
    "prompt_tokens": "int4",
    "output_tokens": "int4",
    "output_chunks": "int4",
    "chunk_offsets_ns": "text",
    "chunk_tokens": "text",
    "client_output_tokens": "int4",
    "server_timings_ms": "text",
    "send_delay_ms": "float8",
    "response_ms": "float8",
    "tokens_disagree": "bool",
}
_JSON_COLUMNS = [
    i for i, name in enumerate(REQUEST_COLUMNS) if name in ("chunk_offsets_ns", "chunk_tokens", "server_timings_ms")
]


def _insert(session: Session, table: type[Base]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def request_values(record: RequestRecord) -> tuple[Any, ...]:
    """The ``requests`` row of a record, in :data:`REQUEST_COLUMNS` order: raw fields plus the
    derived values used in SQL, as the record computes them."""
    return (
        record.id,
        record.run_id,
        record.target,
        record.step_index,
        record.in_warmup,
        record.host,
        record.pid,
        record.api.value,
        record.model,
        record.prompt_id,
        record.outcome.value,
        record.http_status,
        record.server_request_id,
        record.error,
        record.started_at,
        record.ttft_ms,
        record.e2e_ms,
        record.tpot_ms,
        record.prompt_tokens,
        record.output_tokens,
        len(record.chunk_offsets_ns),
        record.chunk_offsets_ns,
        record.chunk_tokens,
        record.client_output_tokens,
        record.server_timings_ms,
        record.send_delay_ns / metrics.NS_PER_MS,
        record.response_ms,
        record.tokens_disagree,
    )


def request_row(record: RequestRecord) -> dict[str, Any]:
    """The ``requests`` row of a record as a mapping of column names to values."""
    return dict(zip(REQUEST_COLUMNS, request_values(record), strict=True))


def insert_request_records(session: Session, records: Iterable[RequestRecord]) -> int:
    """Insert records, ignoring ones already stored; returns how many rows were new.

    ``records`` may be a generator: on PostgreSQL it is consumed while COPY sends rows, so a caller
    that validates lazily overlaps its work with the server's. An exception it raises aborts the
    whole insert.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _copy_request_records(session, records)
    batch = list(records)
    stored = 0
    for start in range(0, len(batch), ROWS_PER_STATEMENT):
        rows = [request_row(r) for r in batch[start : start + ROWS_PER_STATEMENT]]
        stmt = _insert(session, Request).values(rows).on_conflict_do_nothing(index_elements=["id"])
        result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
        stored += result.rowcount
    return stored


def _copy_row(record: RequestRecord) -> list[Any]:
    row = list(request_values(record))
    for i in _JSON_COLUMNS:
        row[i] = orjson.dumps(row[i]).decode()
    return row


def _copy_request_records(session: Session, records: Iterable[RequestRecord]) -> int:
    names = ", ".join(REQUEST_COLUMNS)
    sent: list[RequestRecord] = []

    def rows() -> Iterator[list[Any]]:
        for record in records:
            sent.append(record)
            yield _copy_row(record)

    # The psycopg connection under the session's, so COPY joins the caller's transaction.
    dbapi_connection = session.connection().connection.driver_connection
    assert dbapi_connection is not None
    with dbapi_connection.cursor() as cursor:
        # A first delivery goes straight in, each row built as COPY sends it, so the server stores
        # some while this process prepares the next. If any row is already there (a retried batch),
        # the COPY fails as a whole and the batch goes through a temporary table and ON CONFLICT.
        cursor.execute("SAVEPOINT stampede_copy")
        try:
            _copy_rows(cursor, Request.__tablename__, rows())
        except UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT stampede_copy")
        else:
            cursor.execute("RELEASE SAVEPOINT stampede_copy")
            return len(sent)
        sent.extend(records)  # the server may have refused the COPY before every row was read
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING_REQUESTS} "
            f"(LIKE {Request.__tablename__}) ON COMMIT DELETE ROWS"
        )
        _copy_rows(cursor, _INCOMING_REQUESTS, (_copy_row(r) for r in sent))
        cursor.execute(
            f"INSERT INTO {Request.__tablename__} ({names}) SELECT {names} FROM {_INCOMING_REQUESTS} "
            "ON CONFLICT (id) DO NOTHING"
        )
        stored: int = cursor.rowcount
        # Emptied now too, not only at commit: a caller may store several batches in one transaction.
        cursor.execute(f"TRUNCATE {_INCOMING_REQUESTS}")
    return stored


def _copy_rows(cursor: Any, table: str, rows: Iterable[list[Any]]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(REQUEST_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(REQUEST_COLUMNS.values()))
        for row in rows:
            copy.write_row(row)


def upsert_run(session: Session, run: RunRecord) -> None:
    """Create the run row or update its status, end time and config."""
    values = run.model_dump(exclude_computed_fields=True)
    values["status"] = run.status.value
    stmt = _insert(session, Run).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "status": stmt.excluded.status,
            "ended_at": stmt.excluded.ended_at,
            "config": stmt.excluded.config,
        },
    )
    session.execute(stmt)


def upsert_step(session: Session, step: StepRecord) -> None:
    """Create the step row or record its end."""
    values = step.model_dump(exclude_computed_fields=True)
    values["api"] = step.api.value
    stmt = _insert(session, Step).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "target", "index"],
        set_={"users": stmt.excluded.users, "ended_at": stmt.excluded.ended_at},
    )
    session.execute(stmt)


def insert_gpu_samples(session: Session, samples: Sequence[GpuSampleRecord]) -> int:
    """Insert GPU readings in one multi-row statement; returns how many rows were written."""
    if not samples:
        return 0
    rows = [s.model_dump() | {"processes": [p.model_dump() for p in s.processes]} for s in samples]
    session.execute(_insert(session, GpuSample).values(rows))
    return len(rows)


def insert_runtime_samples(session: Session, samples: Sequence[RuntimeSampleRecord]) -> int:
    """Insert scraped runtime values in one multi-row statement; returns how many rows were written."""
    if not samples:
        return 0
    session.execute(_insert(session, RuntimeSample).values([s.model_dump() for s in samples]))
    return len(samples)


def insert_loadgen_samples(session: Session, samples: Sequence[LoadgenSampleRecord]) -> int:
    """Insert load-generator health samples, ignoring ones already stored; returns how many were new."""
    if not samples:
        return 0
    rows = [sample.model_dump() for sample in samples]
    stmt = _insert(session, LoadgenSample).values(rows).on_conflict_do_nothing(index_elements=["id"])
    result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
    return result.rowcount
