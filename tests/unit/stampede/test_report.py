"""Step summaries read back from a SQLite store: every request field used, the run's SLO, saturation, the cache."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stampede import store
from stampede.db import make_engine, upgrade
from stampede.metrics import Percentiles, StepSummary
from stampede.records import Api, LoadgenSampleRecord, Outcome, RequestRecord, RunRecord, RunStatus, StepRecord
from stampede.report import SloLimits, TargetStep, knees, step_summaries
from stampede.schema import StepStats
from tests.builders import request_record

MS = 1_000_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def request(run_id: uuid.UUID, **overrides: object) -> RequestRecord:
    """A successful request: TTFT 100 ms, chunks every 10 ms, E2E 130 ms, 4 tokens by the server."""
    fields: dict[str, object] = {
        "started_at": T0 + timedelta(seconds=3),
        "chunk_offsets_ns": [100 * MS, 110 * MS, 120 * MS, 130 * MS],
        "end_offset_ns": 130 * MS,
        "output_tokens": 4,
        "prompt_tokens": 6,
    }
    return request_record(run_id=run_id, **(fields | overrides))


def seed(
    session: Session,
    records: list[RequestRecord],
    slo: dict[str, float] | None = None,
    rate: float | None = None,
) -> uuid.UUID:
    """A run with one ended 12 s step (2 s warm-up: a 10 s window) holding ``records``."""
    run_id = records[0].run_id
    config = {"sweep": {"name": "s", "slo": slo or {}}}
    store.upsert_run(session, RunRecord(id=run_id, name="r", status=RunStatus.FINISHED, started_at=T0, config=config))
    store.upsert_step(
        session,
        StepRecord(
            run_id=run_id,
            target="t",
            index=0,
            users=2,
            request_rate_per_s=rate,
            api=Api.OPENAI_CHAT,
            model="m",
            base_url="http://127.0.0.1",
            started_at=T0,
            warmup_s=2.0,
            ended_at=T0 + timedelta(seconds=12),
        ),
    )
    store.insert_request_records(session, records)
    return run_id


def only_step(session: Session, run_id: uuid.UUID) -> TargetStep:
    [step] = step_summaries(session, run_id)
    return step


def test_every_request_field_reaches_the_summary(session: Session) -> None:
    run_id = uuid.uuid4()
    records = [
        # Ollama-like: the server's total leaves 30 ms of network and queue; 5 tokens by the client's tokenizer.
        request(run_id, output_tokens=None, client_output_tokens=5, server_timings_ms={"total_ms": 100.0}),
        # Chunks of 2 tokens: ITL halves each gap. Two chunks were read together with the next.
        request(run_id, chunk_tokens=[1, 2, 2, 2], send_delay_ns=20 * MS, late_chunks=[0, 2]),
        # Waited 500 ms for a model load: counted as a load, left out of TTFT.
        request(
            run_id, chunk_offsets_ns=[900 * MS, 910 * MS], end_offset_ns=910 * MS, server_timings_ms={"load_ms": 500}
        ),
        # Sent again after its kept-alive connection was found closed, then timed out: a reconnect and an error.
        request(
            run_id,
            outcome=Outcome.TIMEOUT,
            chunk_offsets_ns=[],
            end_offset_ns=60_000 * MS,
            output_tokens=None,
            reconnects=1,
        ),
        request(run_id, in_warmup=True, reconnects=1, chunk_offsets_ns=[9000 * MS], end_offset_ns=9000 * MS),
    ]
    step = only_step(session, seed(session, records))
    s = step.summary

    assert (s.requests, s.errors, s.model_loads, s.late_chunks, s.reconnects) == (4, 1, 1, 2, 1)
    assert s.requests_per_s == pytest.approx(0.3)
    # Output tokens: 5 (tokenizer) + 4 + 4 (server) over 10 s; prompt tokens add 3 x 6.
    assert s.output_tokens_per_s == pytest.approx(1.3)
    assert s.total_tokens_per_s == pytest.approx(3.1)
    assert s.ttft_ms == Percentiles(100.0, 100.0, 100.0)
    assert s.itl_ms == Percentiles.of([10.0, 10.0, 10.0, 5.0, 5.0, 5.0, 10.0])
    assert s.network_and_queue_ms == Percentiles(30.0, 30.0, 30.0)
    assert s.response_ms == Percentiles.of([130.0, 150.0, 910.0])  # the second was sent 20 ms late
    assert s.goodput_requests_per_s is None
    assert (step.saturated, step.request_rate_per_s, step.load) == (False, None, 2.0)


def test_goodput_counts_requests_meeting_the_runs_slo(session: Session) -> None:
    run_id = uuid.uuid4()
    records = [request(run_id, chunk_offsets_ns=[ttft * MS, (ttft + 10) * MS], end_offset_ns=(ttft + 10) * MS)
               for ttft in (100, 200, 300, 400)]  # fmt: skip
    step = only_step(session, seed(session, records, slo={"ttft_ms": 250}, rate=0.5))

    assert step.summary.goodput_requests_per_s == pytest.approx(0.2)  # 2 of 4 within 250 ms, over 10 s
    assert (step.request_rate_per_s, step.load) == (0.5, 0.5)


def test_a_step_is_saturated_when_its_measured_seconds_mostly_lag_or_run_out_of_cpu(session: Session) -> None:
    run_id = seed(session, [request(uuid.uuid4())])  # the step runs T0 to T0 + 12 s, warm-up 2 s

    def sample(at_s: float, cpu: float, lag: float) -> LoadgenSampleRecord:
        return LoadgenSampleRecord(run_id=run_id, target="t", step_index=0, host="h", pid=1,
                                   sampled_at=T0 + timedelta(seconds=at_s), cpu_pct=cpu, loop_lag_ms=lag)  # fmt: skip

    # Stalls in the warm-up (start-up) and after the end (shutdown) do not count, nor does a lone one.
    store.insert_loadgen_samples(session, [sample(1, 99, 80), sample(2.5, 99, 80), sample(13, 99, 80)])
    store.insert_loadgen_samples(session, [sample(4, 50, 1), sample(5, 60, 30), sample(6, 60, 2)])
    assert not only_step(session, run_id).saturated
    store.insert_loadgen_samples(session, [sample(7, 40, 12), sample(8, 40, 15)])
    assert only_step(session, run_id).saturated


def test_summaries_are_cached_until_the_step_gains_rows(session: Session) -> None:
    run_id = uuid.uuid4()
    seed(session, [request(run_id)])
    assert only_step(session, run_id).summary.requests == 1
    rows, cached = session.execute(select(StepStats.request_rows, StepStats.summary)).one()
    assert rows == 1

    # A report reads the cache as long as the step's rows are unchanged ...
    tampered = cached | {"summary": cached["summary"] | {"requests": 99}}
    session.execute(update(StepStats).values(summary=tampered))
    assert only_step(session, run_id).summary.requests == 99
    # ... and recomputes once a late row arrives.
    store.insert_request_records(session, [request(run_id)])
    assert only_step(session, run_id).summary.requests == 2
    assert session.scalar(select(StepStats.request_rows)) == 2


def test_a_changed_slo_recomputes_goodput(session: Session) -> None:
    run_id = uuid.uuid4()
    seed(session, [request(run_id)], slo={"ttft_ms": 50})
    assert only_step(session, run_id).summary.goodput_requests_per_s == 0.0
    config = {"sweep": {"slo": {"ttft_ms": 150}}}
    store.upsert_run(session, RunRecord(id=run_id, name="r", status=RunStatus.FINISHED, started_at=T0, config=config))
    assert only_step(session, run_id).summary.goodput_requests_per_s == pytest.approx(0.1)


def summary(users: int, ttft_p99: float, errors: int = 0) -> StepSummary:
    p = Percentiles(ttft_p99, ttft_p99, ttft_p99)
    return StepSummary(users, 10.0, 100, errors, 10.0, 100.0, p, p, p, p)


def test_the_knee_is_the_highest_load_meeting_every_slo() -> None:
    steps = [
        TargetStep("a", 0, summary(1, 100)),
        TargetStep("a", 1, summary(2, 200)),
        TargetStep("a", 2, summary(4, 200, errors=20)),
        TargetStep("a", 3, summary(8, 900)),
        TargetStep("b", 0, summary(1, 600)),
    ]
    limits = SloLimits(ttft_ms=500, max_error_rate=0.1)
    found = knees(steps, limits)
    assert found["a"] is steps[1] and found["b"] is None
    assert knees(steps, SloLimits(ttft_ms=500))["a"] is steps[2]


def test_slo_limits_come_from_the_sweep_file_in_the_run_config() -> None:
    limits = SloLimits.of_config({"sweep": {"slo": {"ttft_ms": 500, "max_error_rate": 0.01}}})
    assert limits == SloLimits(ttft_ms=500, max_error_rate=0.01)
    assert limits.request_slo() is not None and SloLimits(max_error_rate=0.1).request_slo() is None
    assert not SloLimits.of_config({}).any_set
