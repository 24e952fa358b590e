"""Writes to the results store. Functions take a Session; the caller owns the transaction.

Every write is idempotent: request rows are keyed by the record's UUID and duplicates are ignored,
runs and steps are upserts, so a retried job never doubles a row.

On PostgreSQL request rows go in by COPY into a per-connection temporary table followed by one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: COPY is the fastest way in, and the second statement
keeps the insert idempotent, which COPY alone cannot. SQLite gets multi-row INSERTs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from stampede.records import RequestRecord, RunRecord, StepRecord
from stampede.schema import Request, Run, Step

# SQLite allows 32,766 bound parameters per statement; 21 columns x 1,000 rows stays well under it.
ROWS_PER_STATEMENT = 1000

# Emptied at each commit, so a batch never sees rows of another, even one that was rolled back.
_INCOMING_REQUESTS = "stampede_incoming_requests"


def _insert(session: Session, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def request_row(record: RequestRecord) -> dict[str, Any]:
    """The ``requests`` row of a record: raw fields plus the derived latencies used in SQL."""
    return {
        "id": record.id,
        "run_id": record.run_id,
        "target": record.target,
        "step_index": record.step_index,
        "in_warmup": record.in_warmup,
        "host": record.host,
        "pid": record.pid,
        "api": record.api.value,
        "model": record.model,
        "prompt_id": record.prompt_id,
        "outcome": record.outcome.value,
        "http_status": record.http_status,
        "error": record.error,
        "started_at": record.started_at,
        "ttft_ms": record.ttft_ms,
        "e2e_ms": record.e2e_ms,
        "tpot_ms": record.tpot_ms,
        "prompt_tokens": record.prompt_tokens,
        "output_tokens": record.output_tokens,
        "output_chunks": len(record.chunk_offsets_ns),
        "chunk_offsets_ns": record.chunk_offsets_ns,
    }


def insert_request_records(session: Session, records: Sequence[RequestRecord]) -> int:
    """Insert records, ignoring ones already stored; returns how many rows were new."""
    if not records:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _copy_request_records(session, records)
    table = Request.__table__
    stored = 0
    for start in range(0, len(records), ROWS_PER_STATEMENT):
        rows = [request_row(r) for r in records[start : start + ROWS_PER_STATEMENT]]
        stmt = _insert(session, table).values(rows).on_conflict_do_nothing(index_elements=["id"])
        stored += session.execute(stmt).rowcount
    return stored


def _copy_request_records(session: Session, records: Sequence[RequestRecord]) -> int:
    columns = [c.name for c in Request.__table__.columns]
    names = ", ".join(columns)
    json_column = columns.index("chunk_offsets_ns")
    # The psycopg connection under the session's, so COPY joins the caller's transaction.
    dbapi_connection = session.connection().connection.driver_connection
    assert dbapi_connection is not None
    with dbapi_connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING_REQUESTS} "
            f"(LIKE {Request.__tablename__}) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY {_INCOMING_REQUESTS} ({names}) FROM STDIN") as copy:
            for record in records:
                row = list(request_row(record).values())
                row[json_column] = orjson.dumps(row[json_column]).decode()
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {Request.__tablename__} ({names}) SELECT {names} FROM {_INCOMING_REQUESTS} "
            "ON CONFLICT (id) DO NOTHING"
        )
        stored: int = cursor.rowcount
        # Emptied now too, not only at commit: a caller may store several batches in one transaction.
        cursor.execute(f"TRUNCATE {_INCOMING_REQUESTS}")
    return stored


def upsert_run(session: Session, run: RunRecord) -> None:
    """Create the run row or update its status, end time and config."""
    values = run.model_dump(exclude_computed_fields=True)
    values["status"] = run.status.value
    stmt = _insert(session, Run.__table__).values(values)
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
    stmt = _insert(session, Step.__table__).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "target", "index"],
        set_={"users": stmt.excluded.users, "ended_at": stmt.excluded.ended_at},
    )
    session.execute(stmt)
