"""Sinks: batching, order, the bounded buffer and spill file while the store is away, secret masking.

A fake sink records what it is given and fails on demand, standing in for Redis or the database.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loadgen.embedded_sink import EmbeddedSink
from loadgen.journal import read_segment
from loadgen.sinks import Sink
from loadgen.storejobs import STORE_REQUESTS, STORE_RUN
from stampede.db import make_engine, upgrade
from stampede.records import Outcome, RequestRecord, RunRecord, RunStatus
from stampede.schema import Request
from stampede.settings import REDACTED, get_settings
from tests.builders import request_record

RUN_ID = uuid.uuid4()


def make_request(**overrides: object) -> RequestRecord:
    fields: dict[str, object] = {"run_id": RUN_ID, "chunk_offsets_ns": [], "end_offset_ns": 1_000_000}
    return request_record(**(fields | overrides))


class FakeSink(Sink):
    """Keeps delivered jobs in order; raises ConnectionError while ``down``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.down = False
        self.delivered: list[tuple[str, Any]] = []
        super().__init__(*args, **kwargs)

    def _interrupt(self) -> None:
        """A fake delivery is over at once."""

    def _deliver(self, job: str, arg: Any) -> None:
        if self.down:
            raise ConnectionError("store unreachable")
        self.delivered.append((job, arg))


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("STAMPEDE_API_KEY", "STAMPEDE_DATABASE_URL", "STAMPEDE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def request_ids(sink: FakeSink) -> list[str]:
    batches = [arg["rows"] for job, arg in sink.delivered if job == STORE_REQUESTS]
    return [line.split("\t")[0] for rows in batches for line in rows.splitlines()]


def test_full_batches_go_at_once_and_a_partial_one_after_the_interval() -> None:
    sink = FakeSink(batch_size=3, flush_interval_s=0.2)
    records = [make_request() for _ in range(4)]
    for r in records:
        sink.add_request(r)
    gevent.sleep(0.05)
    assert [arg["count"] for _, arg in sink.delivered] == [3]
    gevent.sleep(0.4)
    assert request_ids(sink) == [str(r.id) for r in records]
    assert sink.close(timeout_s=2)
    assert sink.delivered_requests == 4


def test_outage_buffers_then_spills_then_replays_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spill = tmp_path / "spill.jsonl"
    sink = FakeSink(batch_size=2, flush_interval_s=0.05, max_buffered_records=4, spill_path=spill)
    sink.down = True
    records = [make_request() for _ in range(12)]
    with caplog.at_level(logging.WARNING, logger="loadgen.sinks"):
        for r in records[:6]:
            sink.add_request(r)
        sink.add_run(RunRecord(id=RUN_ID, name="r", status=RunStatus.FINISHED, started_at=datetime.now(UTC)))
        for r in records[6:]:
            sink.add_request(r)
        assert not sink.flush(timeout_s=0.3)
        # The first two batches fill the bound of 4 records; the other four batches and the run go to the file.
        assert spill.exists()
        assert len(spill.read_text().splitlines()) == 5
        sink.down = False
        assert sink.close(timeout_s=10)
    assert request_ids(sink) == [str(r.id) for r in records]
    assert [job for job, _ in sink.delivered].index(STORE_RUN) == 3
    assert not spill.exists()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("buffering and retrying" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert sum("spilling further ones to" in m for m in messages) == 1


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("stampede-journal-*.rows"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def test_rows_are_journaled_until_delivered_and_spilled_ones_only_once(tmp_path: Path) -> None:
    sink = FakeSink(batch_size=2, flush_interval_s=10, max_buffered_records=2, spill_path=tmp_path / "spill.jsonl")
    sink.down = True
    records = [make_request() for _ in range(5)]
    for r in records:
        sink.add_request(r)
    gevent.sleep(0.05)
    # Batch 1 waits in memory, batch 2 went to the spill file, the fifth row waits in the buffer:
    # the journal holds the rows of batch 1 and of the buffer, the spill file those of batch 2.
    journaled = [read_segment(p)[1] for p in segments(tmp_path)]
    assert [[line.split("\t")[0] for line in rows] for rows in journaled] == [
        [str(records[0].id), str(records[1].id)],
        [str(records[4].id)],
    ]
    sink.down = False
    assert sink.close(timeout_s=5)
    assert request_ids(sink) == [str(r.id) for r in records]
    assert segments(tmp_path) == [] and not (tmp_path / "spill.jsonl").exists()


def test_the_last_spilled_job_stays_on_disk_until_it_is_delivered(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    sink = FakeSink(batch_size=1, flush_interval_s=10, max_buffered_records=1, spill_path=spill)
    sink.down = True
    records = [make_request() for _ in range(3)]
    for r in records:
        sink.add_request(r)  # the first waits in memory, the other two in the spill file
    gevent.sleep(0.05)
    delivered = 0
    real_deliver = FakeSink._deliver

    def deliver_two_then_fail(job: str, arg: Any) -> None:
        nonlocal delivered
        if delivered == 2:
            raise ConnectionError("store unreachable again")
        real_deliver(sink, job, arg)
        delivered += 1

    sink._deliver = deliver_two_then_fail  # type: ignore[method-assign]
    sink.down = False
    gevent.sleep(0.3)
    assert request_ids(sink) == [str(r.id) for r in records[:2]]
    (drained,) = tmp_path.glob("spill.drained-*.jsonl")
    last = orjson.loads(drained.read_bytes().splitlines()[-1])
    assert last["arg"]["rows"].split("\t")[0] == str(records[2].id)
    # Closed undelivered, the job moves to the kept file, and only then leaves the drained one.
    assert not sink.close(timeout_s=0.2)
    assert [job["arg"]["rows"].split("\t")[0] for job in kept_jobs(tmp_path)] == [str(records[2].id)]
    assert list(tmp_path.glob("spill.drained-*.jsonl")) == []


def kept_jobs(folder: Path) -> list[dict[str, Any]]:
    (kept,) = folder.glob("*.kept.jsonl")
    return [orjson.loads(line) for line in kept.read_bytes().splitlines()]


def test_a_sink_closed_undelivered_keeps_everything_in_order_in_one_file_and_says_how_to_deliver_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "spill.jsonl"
    sink = FakeSink(batch_size=3, flush_interval_s=10, max_buffered_records=4, spill_path=spill)
    sink.down = True
    run = RunRecord(id=RUN_ID, name="r", status=RunStatus.RUNNING, started_at=datetime.now(UTC), config={})
    sink.add_run(run)
    records = [make_request() for _ in range(7)]
    for r in records:
        sink.add_request(r)  # the run and a batch of 3 in memory; the next batch spilled; one row in the buffer
    sink.add_run(run.model_copy(update={"status": RunStatus.FINISHED}))
    gevent.sleep(0.05)
    with caplog.at_level(logging.ERROR, logger="loadgen.sinks"):
        assert not sink.close(timeout_s=0.2)
    jobs = kept_jobs(tmp_path)
    assert [job["job"] for job in jobs] == [STORE_RUN, STORE_REQUESTS, STORE_REQUESTS, STORE_RUN, STORE_REQUESTS]
    rows = [
        line.split("\t")[0] for job in jobs if job["job"] == STORE_REQUESTS for line in job["arg"]["rows"].splitlines()
    ]
    assert rows == [str(r.id) for r in records]
    assert jobs[-2]["arg"]["status"] == "finished"
    # Safe in the kept file: no other copy is left to be delivered twice.
    assert segments(tmp_path) == [] and not spill.exists()
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    kept = tmp_path / "spill.kept.jsonl"
    assert "9 records not stored (7 requests, 2 run, step and sample rows; ConnectionError: store unreachable)" in line
    assert line.endswith(f"kept in {kept}; deliver them with `stampede replay {kept}`")


def test_drain_waits_while_deliveries_succeed() -> None:
    sink = FakeSink(batch_size=1, flush_interval_s=10)
    real_deliver = FakeSink._deliver

    def slow(job: str, arg: Any) -> None:
        time.sleep(0.15)  # in gevent's thread pool, as a real store's I/O
        real_deliver(sink, job, arg)

    sink._deliver = slow  # type: ignore[method-assign]
    for _ in range(8):
        sink.add_request(make_request())
    started = time.monotonic()
    assert sink.drain(stall_s=0.5)  # 1.2 s of deliveries, none slower than the stall bound
    assert time.monotonic() - started >= 1.0
    assert sink.close(timeout_s=1)


def test_drain_gives_up_on_a_failing_store_after_stall_s_and_only_once(tmp_path: Path) -> None:
    sink = FakeSink(batch_size=1, flush_interval_s=10, spill_path=tmp_path / "spill.jsonl")
    sink.down = True
    sink.add_request(make_request())
    started = time.monotonic()
    assert not sink.drain(stall_s=0.5)
    assert 0.4 <= time.monotonic() - started < 1.5
    started = time.monotonic()
    assert not sink.drain(stall_s=0.5)  # Locust's quitting after its test_stop: no second wait
    assert time.monotonic() - started < 0.3
    assert not sink.close(timeout_s=0)


def test_give_up_cuts_the_wait_for_a_failing_store_short(tmp_path: Path) -> None:
    sink = FakeSink(batch_size=1, flush_interval_s=10, spill_path=tmp_path / "spill.jsonl")
    sink.down = True
    sink.add_request(make_request())
    gevent.spawn_later(0.3, sink.give_up)  # as SIGTERM does
    started = time.monotonic()
    assert not sink.drain(stall_s=60)
    assert time.monotonic() - started < 1.5
    started = time.monotonic()
    assert not sink.close(timeout_s=0)
    assert time.monotonic() - started < 1.0
    assert len(kept_jobs(tmp_path)) == 1


def test_secrets_are_masked_in_run_config_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMPEDE_API_KEY", "sk-planted-key")
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", "postgresql+psycopg://u:db-planted%40pw@db/x")
    get_settings.cache_clear()
    sink = FakeSink(batch_size=10, flush_interval_s=0.05)
    run = RunRecord(
        id=RUN_ID,
        name="r",
        status=RunStatus.RUNNING,
        started_at=datetime.now(UTC),
        config={
            "headers": {"Authorization": "Bearer sk-planted-key"},
            "db": ["db-planted@pw", "postgresql+psycopg://u:db-planted%40pw@db/x"],
        },
    )
    sink.add_run(run)
    sink.add_request(make_request(outcome=Outcome.HTTP_ERROR, error="401: bad key sk-planted-key"))
    assert sink.close(timeout_s=2)
    sent = repr(sink.delivered)
    assert "planted" not in sent
    assert sent.count(REDACTED) == 4


def test_in_process_sink_stores_through_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'sink.db'}"
    upgrade(url)
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", url)
    get_settings.cache_clear()
    sink = EmbeddedSink(batch_size=5, flush_interval_s=0.05)
    for _ in range(12):
        sink.add_request(make_request())
    assert sink.close(timeout_s=10)
    engine = make_engine(url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Request)) == 12
    engine.dispose()
