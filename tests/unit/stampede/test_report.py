"""Step summaries read back from a SQLite store: every request field used, the run's SLO, saturation, the cache."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stampede import baseline, store
from stampede.db import make_engine, upgrade
from stampede.metrics import Percentiles
from stampede.records import (
    Api,
    LoadgenCountRecord,
    LoadgenSampleRecord,
    Outcome,
    RequestRecord,
    RunRecord,
    RunStatus,
    StepRecord,
)
from stampede.report import TargetStep, knees, step_summaries
from stampede.samples import RuntimeSampleRecord
from stampede.schema import Step, StepStats
from stampede.slo import Slo
from stampede.summary import StepSummary
from stampede.sweepfile import RegressionSpec
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
    opened_s: float | None = 2.0,
) -> uuid.UUID:
    """A run with one ended 12 s step holding ``records``, its window stored as opened at ``opened_s``
    (a 10 s window by default; None: the first summary opens it by state)."""
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
    if opened_s is not None:
        opened = T0 + timedelta(seconds=opened_s)
        session.execute(update(Step).values(window_opened_at=opened, load_reached=True))
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
            end_offset_ns=6_000 * MS,
            output_tokens=None,
            reconnects=1,
        ),
        # Ended before the window opened: none of its figures count.
        request(run_id, started_at=T0, reconnects=1, chunk_offsets_ns=[900 * MS], end_offset_ns=1000 * MS),
    ]
    step = only_step(session, seed(session, records))
    s = step.summary

    assert (s.requests, s.errors, s.model_loads, s.late_chunks, s.reconnects) == (4, 1, 1, 2, 1)
    assert s.requests_per_s == pytest.approx(0.3)
    # Output tokens: 5 (tokenizer) + 4 + 4 (server) over 10 s; prompt tokens add 3 x 6. The second's
    # tokenizer counts (1, 2, 2, 2) only place its 4 tokens in time.
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
    limits = Slo(ttft_ms=500, max_error_rate=0.1)
    found = knees(steps, limits)
    assert found["a"] is steps[1] and found["b"] is None
    assert knees(steps, Slo(ttft_ms=500))["a"] is steps[2]


def test_slo_limits_come_from_the_sweep_file_in_the_run_config() -> None:
    limits = Slo.of_config({"sweep": {"slo": {"ttft_ms": 500, "max_error_rate": 0.01}}})
    assert limits == Slo(ttft_ms=500, max_error_rate=0.01)
    assert limits.request_slo() is not None and Slo(max_error_rate=0.1).request_slo() is None
    assert not Slo.of_config({}).any_set


def test_a_steps_window_opens_by_state_once_and_counts_tokens_by_arrival(session: Session) -> None:
    run_id = uuid.uuid4()
    # Requests of 8 s, chunks every 0.5 s from 0.5 s, 2 tokens each.
    chunks = [500 * MS * i for i in range(1, 17)]

    def story(sent_s: float) -> RequestRecord:
        fields = {"started_at": T0 + timedelta(seconds=sent_s), "chunk_offsets_ns": chunks,
                  "end_offset_ns": chunks[-1], "output_tokens": 32}  # fmt: skip
        return request(run_id, **fields)

    # The second user's request joins at 1 s: two in flight, the first producing, so the load holds
    # from 1 s; with the 2 s warm-up the window is 3-12 s.
    step = only_step(session, seed(session, [story(0.0), story(1.0), story(8.0), story(9.0)], opened_s=None))
    stored = session.scalars(select(Step)).one()
    assert stored.window_opened_at is not None and stored.load_reached
    assert stored.window_opened_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=3)
    # Chunks inside 3-12 s: the first's at 3-8 s (11), the second's at 3-9 s (13), the third's at
    # 8.5-11.5 s (7), the fourth's at 9.5-11.5 s (5).
    assert step.summary.output_tokens_per_s == pytest.approx(2 * (11 + 13 + 7 + 5) / 9)
    assert (step.summary.requests, step.summary.opened_after_s) == (2, 3.0)  # ended at 8 and 9 s


def test_requests_sent_before_the_step_count_with_what_they_brought_to_its_window(session: Session) -> None:
    run_id = uuid.uuid4()
    chunks = [500 * MS * i for i in range(1, 17)]
    earlier = request(run_id, started_at=T0 - timedelta(seconds=4), chunk_offsets_ns=chunks,
                      end_offset_ns=chunks[-1], output_tokens=16)  # fmt: skip
    s = only_step(session, seed(session, [earlier])).summary
    # Its chunks at 2-4 s fall in the 2-12 s window: 5 of its 16, one token each; it completed at 4 s.
    assert s.output_tokens_per_s == pytest.approx(5 / 10)
    assert s.requests == 1 and s.mean_in_flight == pytest.approx(2 / 10)


def test_the_runtimes_counter_over_the_window_stands_beside_the_clients_count(session: Session) -> None:
    run_id = uuid.uuid4()
    # A request every second, each 10 tokens in 10 chunks over its first second: 10 tokens/s.
    records = [request(run_id, started_at=T0 + timedelta(seconds=i), chunk_offsets_ns=[100 * MS * k for k in range(10)],
                       end_offset_ns=900 * MS, output_tokens=10) for i in range(12)]  # fmt: skip
    run_id = seed(session, records)

    def scrape(at_s: float, value: float, engine: str = "0") -> RuntimeSampleRecord:
        at = T0 + timedelta(seconds=at_s)
        metric, labels = "vllm:generation_tokens_total", {"engine": engine}
        return RuntimeSampleRecord(run_id=run_id, target="t", host="h", sampled_at=at, metric=metric, labels=labels,
                                   value=value)  # fmt: skip

    # Scrapes at 1 s (before the window) and 12.5 s (after it) are left out; two engines add up.
    store.insert_runtime_samples(session, [scrape(1, 0), scrape(3, 100), scrape(11, 160), scrape(12.5, 999)])
    store.insert_runtime_samples(session, [scrape(3, 50, "1"), scrape(11, 70, "1")])
    s = only_step(session, run_id).summary
    assert s.server_output_tokens_per_s == pytest.approx((60 + 20) / 8)
    assert s.checked_output_tokens_per_s == pytest.approx(10.0)  # 80 tokens arrived between 3 and 11 s
    assert s.server_difference_pct == pytest.approx(0.0) and not s.server_disagrees


def counts(run_id: uuid.UUID, *per_process: int) -> list[LoadgenCountRecord]:
    return [
        LoadgenCountRecord(run_id=run_id, target="t", step_index=0, host="h", pid=pid, requests=n)
        for pid, n in enumerate(per_process)
    ]


def test_a_step_holding_fewer_rows_than_its_load_generators_made_is_incomplete(session: Session) -> None:
    run_id = uuid.uuid4()
    seed(session, [request(run_id) for _ in range(3)])
    store.upsert_loadgen_counts(session, counts(run_id, 2, 2))
    step = only_step(session, run_id)
    assert (step.stored, step.produced, step.incomplete) == (3, 4, True)
    assert step.as_row()["stored_requests"] == 3 and step.as_row()["produced_requests"] == 4
    with pytest.raises(baseline.IncompleteRun, match="t step 0: 3 of 4"):
        baseline.check_run(session, run_id, RegressionSpec())


def test_counts_that_match_the_rows_make_a_complete_step_and_never_go_down(session: Session) -> None:
    run_id = uuid.uuid4()
    seed(session, [request(run_id) for _ in range(3)])
    store.upsert_loadgen_counts(session, counts(run_id, 3))
    store.upsert_loadgen_counts(session, counts(run_id, 1))  # a late or replayed job with an older count
    step = only_step(session, run_id)
    assert (step.stored, step.produced, step.incomplete) == (3, 3, False)


def test_a_run_without_counts_is_not_called_incomplete(session: Session) -> None:
    run_id = uuid.uuid4()
    step = only_step(session, seed(session, [request(run_id)]))
    assert (step.produced, step.incomplete) == (None, False)
