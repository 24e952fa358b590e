"""The store on SQLite: idempotent request inserts, upserts, and the column list the PostgreSQL COPY uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stampede import rows, store
from stampede.db import make_engine, upgrade
from stampede.records import Api, RequestRecord, RunRecord, RunStatus, StepRecord
from stampede.schema import Request, Run
from tests.builders import MS, request_record


def make_request(run_id: uuid.UUID, **overrides: object) -> RequestRecord:
    return request_record(run_id=run_id, **overrides)


@pytest.fixture
def session(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Request)) or 0


def test_a_retried_batch_adds_no_rows(session: Session) -> None:
    run_id = uuid.uuid4()
    batch = [make_request(run_id) for _ in range(2500)]  # spans three multi-row statements
    with session.begin():
        assert store.insert_request_records(session, batch) == 2500
    with session.begin():
        assert store.insert_request_records(session, batch[1000:] + [make_request(run_id)]) == 1
    assert count(session) == 2501


def test_rows_carry_the_derived_latencies(session: Session) -> None:
    record = make_request(uuid.uuid4())
    with session.begin():
        store.insert_request_records(session, [record])
    row = session.get(Request, record.id)
    assert row is not None
    assert (row.ttft_ms, row.e2e_ms, row.tpot_ms, row.output_chunks) == (50.0, 90.0, 20.0, 3)
    assert row.chunk_offsets_ns == [50 * MS, 60 * MS, 80 * MS]


def test_a_batch_from_an_older_producer_stores_with_defaults_for_missing_columns(session: Session) -> None:
    record = make_request(uuid.uuid4(), chunk_tokens=[1, 2, 1])
    batch = rows.encode_batch([record])
    kept = [
        i
        for i, c in enumerate(batch["columns"])
        if c not in ("chunk_tokens", "tokens_disagree", "late_chunks", "reconnects")
    ]
    line = batch["rows"].rstrip("\n").split("\t")
    older = rows.row_batch(["\t".join(line[i] for i in kept) + "\n"], [batch["columns"][i] for i in kept])
    with session.begin():
        assert store.insert_request_rows(session, older) == 1
    row = session.get(Request, record.id)
    assert row is not None
    assert (row.chunk_tokens, row.tokens_disagree, row.late_chunks, row.reconnects, row.ttft_ms) == (
        [],
        False,
        [],
        0,
        50.0,
    )


def test_run_upsert_keeps_one_row_with_the_latest_status(session: Session) -> None:
    run = RunRecord(id=uuid.uuid4(), name="r", status=RunStatus.RUNNING, started_at=datetime.now(UTC))
    with session.begin():
        store.upsert_run(session, run)
    with session.begin():
        store.upsert_run(session, run.model_copy(update={"status": RunStatus.FINISHED}))
    assert session.scalars(select(Run.status)).all() == ["finished"]


def test_a_run_interrupted_before_its_last_step_ended_is_marked_stopped(session: Session) -> None:
    run = RunRecord(id=uuid.uuid4(), name="r", status=RunStatus.FINISHED, started_at=datetime.now(UTC))
    step = StepRecord(run_id=run.id, target="a", index=0, users=1, api=Api.OPENAI_CHAT, model="m", base_url="u",
                      started_at=run.started_at, warmup_s=0, ended_at=run.started_at)  # fmt: skip
    with session.begin():
        store.upsert_run(session, run)
        store.upsert_step(session, step)  # one of two targets' steps ended: stopped between them
        store.mark_stopped_unless_complete(session, run.id, steps=1)
        assert session.scalars(select(Run.status)).all() == ["finished"]  # all it had ended
        store.mark_stopped_unless_complete(session, run.id, steps=2)
    stopped = session.scalars(select(Run)).one()
    assert stopped.status == "stopped" and stopped.ended_at is not None
