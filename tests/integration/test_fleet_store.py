"""The PostgreSQL bulk path: COPY for a first delivery, the ON CONFLICT fallback that keeps a
retried or overlapping batch from doubling a row, and the job refusing a batch with a bad value
as a whole. SQLite's path is in tests/unit/test_store.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from psycopg.errors import DataError
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from stampede import store
from stampede.db import make_engine, store_problem
from stampede.records import Api, Outcome, RequestRecord
from stampede.rows import REQUEST_COLUMNS, encode_batch, encode_request, row_batch
from stampede.schema import Request
from tests.integration.fleet_helpers import stored_requests
from workers import jobs

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def make_request(run_id: uuid.UUID) -> RequestRecord:
    return RequestRecord(
        run_id=run_id,
        target="t",
        step_index=0,
        in_warmup=False,
        host="h",
        pid=1,
        api=Api.OPENAI_CHAT,
        model="m",
        prompt_id="p",
        outcome=Outcome.OK,
        started_at=datetime.now(UTC),
        chunk_offsets_ns=[50_000_000, 60_000_000, 80_000_000],
        chunk_tokens=[1, 1, 1],
        server_timings_ms={"total_ms": 85.0},
        end_offset_ns=90_000_000,
        output_tokens=3,
    )


def test_retried_and_overlapping_batches_add_only_new_rows(pg_url: str) -> None:
    run_id = uuid.uuid4()
    first = [make_request(run_id) for _ in range(1000)]
    engine = make_engine(pg_url)
    try:
        with Session(engine) as session, session.begin():
            assert store.insert_request_records(session, first) == 1000  # straight COPY
        with Session(engine) as session, session.begin():
            assert store.insert_request_records(session, first) == 0  # a retry: the fallback path
        overlap = first[500:] + [make_request(run_id) for _ in range(10)]
        with Session(engine) as session, session.begin():
            assert store.insert_request_records(session, overlap) == 10
            # Several batches in one transaction: the temporary table starts empty each time.
            assert store.insert_request_records(session, overlap + [make_request(run_id)]) == 1
        assert stored_requests(pg_url) == 1011
        with Session(engine) as session:
            row = session.get(Request, first[0].id)
            assert row is not None
            assert (row.ttft_ms, row.e2e_ms, row.output_chunks) == (50.0, 90.0, 3)
            assert (row.chunk_tokens, row.server_timings_ms) == ([1, 1, 1], {"total_ms": 85.0})
    finally:
        engine.dispose()


def test_the_job_stores_a_row_batch_once_and_a_bad_value_fails_the_whole_batch(pg_store: str) -> None:
    run_id = uuid.uuid4()
    records = [make_request(run_id) for _ in range(600)]
    assert jobs.store_request_rows(encode_batch(records)) == 600
    assert jobs.store_request_rows(encode_batch([*records, make_request(run_id)])) == 1  # a retry
    lines = [encode_request(make_request(run_id)) for _ in range(600)]
    fields = lines[300].split("\t")
    fields[list(REQUEST_COLUMNS).index("step_index")] = "three"
    lines[300] = "\t".join(fields)
    with pytest.raises(DataError, match=r"integer.*\n.*line 301, column step_index"):
        jobs.store_request_rows(row_batch(lines))
    assert stored_requests(pg_store) == 601  # nothing of the broken batch


def test_batches_of_the_previous_format_are_still_stored(pg_store: str) -> None:
    # Locust processes of versions before row batches enqueue records as JSON objects; a fleet
    # upgraded one host at a time, or their spill files, still sends these.
    run_id = uuid.uuid4()
    records = [make_request(run_id).to_job_arg() for _ in range(300)]
    assert jobs.store_request_records(records) == 300
    assert jobs.store_request_records(records) == 0
    broken = [make_request(run_id).to_job_arg(), {**make_request(run_id).to_job_arg(), "step_index": -1}]
    with pytest.raises(ValidationError):
        jobs.store_request_records(broken)
    assert stored_requests(pg_store) == 300


def test_text_values_come_back_from_postgresql_exactly(pg_url: str) -> None:
    error = "a|b\tc\nd\\e\rf \\N 'g' \"h\" é 🚀"
    record = make_request(uuid.uuid4()).model_copy(update={"error": error, "server_request_id": "x|y"})
    engine = make_engine(pg_url)
    try:
        with Session(engine) as session, session.begin():
            assert store.insert_request_records(session, [record]) == 1
        with Session(engine) as session:
            row = session.get(Request, record.id)
            assert row is not None
            assert (row.error, row.server_request_id) == (error, "x|y")
    finally:
        engine.dispose()


def test_a_store_failure_is_one_line_naming_the_database_but_never_the_password(shared_pg: str, tmp_path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    missing = f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/stampede_missing_{uuid.uuid4().hex[:8]}"
    engine = make_engine(missing)
    with pytest.raises(OperationalError) as failure:
        engine.connect()
    said = store_problem(failure.value, missing)
    assert "does not exist" in said and missing.rsplit("/", 1)[1] in said
    assert password not in said and "postgres:***@" in said and "\n" not in said
    empty = f"sqlite:///{tmp_path}/empty.db"  # no tables: the fix is named
    with pytest.raises(OperationalError) as failure, make_engine(empty).connect() as connection:
        connection.exec_driver_sql("SELECT * FROM runs")
    assert "has no tables yet: run `stampede db upgrade`" in store_problem(failure.value, empty)
