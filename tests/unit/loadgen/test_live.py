"""The live figures' arithmetic: histogram percentiles within their stated error, a span's figures as
the stored step figures count them (by when each part of a request happened), merges of worker
slices, and the sliding window's bounds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgpack
import numpy as np
import pytest

from loadgen.live import RELATIVE_ERROR, ZERO_MS, LiveStore, LogHistogram, Slices, figures
from stampede import metrics
from stampede.metrics import Percentiles, RequestSample
from stampede.records import Api, Outcome, RequestRecord
from stampede.summary import summarize_step
from stampede.windows import Window

RUN = uuid.uuid4()
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def record(
    sent_s: float,
    ttft_ms: float = 100.0,
    gap_ms: float = 20.0,
    tokens: int = 5,
    outcome: Outcome = Outcome.OK,
    step: int = 0,
    warmup: bool = False,
    reconnects: int = 0,
    late: int = 0,
    target: str = "sim",
) -> RequestRecord:
    """A request sent ``sent_s`` after T0 whose ``tokens`` chunks came ``gap_ms`` apart after TTFT."""
    ok = outcome is Outcome.OK
    offsets = [round((ttft_ms + i * gap_ms) * 1e6) for i in range(tokens)] if ok else []
    end_ns = (offsets[-1] if offsets else round(ttft_ms * 1e6)) + 1_000_000
    return RequestRecord(
        run_id=RUN, target=target, step_index=step, in_warmup=warmup, host="h", pid=1, api=Api.OPENAI_CHAT,
        model="m", prompt_id="p", outcome=outcome, started_at=T0 + timedelta(seconds=sent_s),
        chunk_offsets_ns=offsets, late_chunks=list(range(late)), end_offset_ns=end_ns,
        output_tokens=tokens if ok else None, reconnects=reconnects,
    )  # fmt: skip


def sample(r: RequestRecord) -> RequestSample:
    """The stored row's view of a record, as stampede.stepdata builds it."""
    tokens, _ = metrics.output_token_count(r.output_tokens, r.client_output_tokens, len(r.chunk_offsets_ns))
    return RequestSample(ok=r.outcome is Outcome.OK, ttft_ms=r.ttft_ms, e2e_ms=r.e2e_ms, tpot_ms=r.tpot_ms,
                         output_tokens=tokens, itl_ms=r.itl_ms, late_chunks=len(r.late_chunks),
                         reconnects=r.reconnects, sent_s=r.started_at.timestamp(), chunk_offsets_ns=r.chunk_offsets_ns,
                         chunk_tokens=metrics.chunk_token_counts(len(r.chunk_offsets_ns), tokens, r.chunk_tokens),
                         cancelled=r.outcome is Outcome.CANCELLED)  # fmt: skip


def assert_within_error(live: Percentiles, exact: Percentiles) -> None:
    for got, want in zip((live.p50, live.p90, live.p99), (exact.p50, exact.p90, exact.p99), strict=True):
        assert got is not None and want is not None
        assert abs(got - want) <= RELATIVE_ERROR * want + ZERO_MS, (got, want)


@pytest.mark.parametrize("n", [1, 2, 7, 31, 1000])
def test_histogram_percentiles_are_within_the_stated_error_of_numpys(n: int) -> None:
    values = np.random.default_rng(n).lognormal(mean=4, sigma=1.5, size=n)
    hist = LogHistogram()
    hist.extend(values.tolist())
    assert hist.count == n
    assert_within_error(hist.percentiles(), Percentiles.of(values))


def test_histogram_one_at_a_time_equals_vectorised_and_keeps_zeros_and_huge_values() -> None:
    values = [0.0, 0.0005, 3.0, 3.01, 250.0, 1e9] * 10
    one, many = LogHistogram(), LogHistogram()
    for v in values:
        one.add(v)
    many.extend(values)
    assert (one.counts == many.counts).all() and many.counts[0] == 20 and many.count == 60
    p50 = many.percentiles().p50
    assert p50 is not None and abs(p50 - 3.0) <= 0.03
    assert LogHistogram.from_wire(many.to_wire()).percentiles() == many.percentiles()


def test_an_empty_histogram_has_no_percentiles() -> None:
    assert LogHistogram().percentiles() == Percentiles(None, None, None)


def test_a_span_counts_as_the_stored_step_figures_do_by_when_things_happened() -> None:
    # Requests of ~1 s (50 chunks 20 ms apart) sent every 0.4 s: many straddle the span's edges.
    records = [record(i * 0.4, ttft_ms=80 + 10 * (i % 7), gap_ms=18 + i % 5, tokens=50) for i in range(40)]
    records += [record(3, outcome=Outcome.TIMEOUT), record(4, outcome=Outcome.HTTP_ERROR, reconnects=1)]
    records += [record(5, outcome=Outcome.TIMEOUT), record(6, late=2)]
    records += [record(15.5, tokens=50).model_copy(update={"outcome": Outcome.CANCELLED})]
    store = LiveStore(window_s=60)
    for r in records:
        store.add(r)
    base = int(T0.timestamp())
    live = figures(store.span("sim", base + 4, base + 14), 10.0)
    stored = summarize_step(1, Window(base + 4, base + 14), [sample(r) for r in records])
    assert live.requests == stored.requests and sum(live.errors.values()) == stored.errors == 2
    assert live.errors == {"timeout": 1, "http_error": 1}  # the first timeout ended before the span
    assert live.requests_per_s == pytest.approx(stored.requests_per_s)
    assert live.output_tokens_per_s == pytest.approx(stored.output_tokens_per_s)  # tokens by their chunk's arrival
    assert live.reconnects == stored.reconnects == 1
    assert live.late_chunks == stored.late_chunks == 2
    for name in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        assert_within_error(getattr(live, name), getattr(stored, name))
    # The cancelled request's chunks count in the last seconds; it is no completion.
    tail = figures(store.span("sim", base + 15, base + 18), 3.0)
    assert tail.requests == sum(
        1
        for r in records
        if r.outcome is not Outcome.CANCELLED and r.e2e_ms / 1000 + (r.started_at - T0).total_seconds() >= 15
    )
    assert tail.output_tokens_per_s * 3 == pytest.approx(
        summarize_step(1, Window(base + 15, base + 18), [sample(r) for r in records]).output_tokens_per_s * 3
    )
    ok = [r for r in records if r.outcome is Outcome.OK]
    whole = figures(store.span("sim", base, base + 60), 60.0)
    expected = sum(r.output_tokens or 0 for r in ok) / sum(r.e2e_ms / 1000 for r in ok)
    assert whole.output_tokens_per_s_per_request == pytest.approx(expected)


def test_a_model_load_is_left_out_of_ttft() -> None:
    store = LiveStore(window_s=30)
    store.add(record(0, ttft_ms=100))
    store.add(record(0, ttft_ms=500).model_copy(update={"server_timings_ms": {"load_ms": 400.0}}))
    summary = store.window("sim", int(T0.timestamp()) + 30)
    assert summary.latencies["ttft_ms"].count == 1 and summary.latencies["e2e_ms"].count == 2


def test_worker_slices_merged_on_the_master_equal_one_process_seeing_every_request() -> None:
    records = [record(i * 0.3, ttft_ms=50 + (i * 37) % 200, tokens=20) for i in range(40)]
    alone = LiveStore(window_s=30)
    for r in records:
        alone.add(r)
    workers = [Slices(), Slices()]
    for i, r in enumerate(records):
        workers[i % 2].add(r)
    master = LiveStore(window_s=30)
    for worker in workers:
        # Locust sends worker reports with msgpack: the slices must survive it.
        master.merge_wire(msgpack.loads(msgpack.dumps(worker.drain()), strict_map_key=False))
        assert worker.by_key == {}  # a report carries each request once
    end = int(T0.timestamp()) + 20
    assert figures(master.window("sim", end), 30.0) == figures(alone.window("sim", end), 30.0)
    assert master.window("sim", end).requests == 40


def test_the_window_holds_the_whole_seconds_before_its_end_and_steps_keep_what_leaves_it() -> None:
    store = LiveStore(window_s=10)
    for sent in (0.0, 4.5, 9.0, 12.0, 19.5):  # responses end about 0.2 s after sending
        store.add(record(sent, ttft_ms=100, gap_ms=20, tokens=5))
    base = int(T0.timestamp())
    assert store.window("sim", base + 10).requests == 3  # ended in seconds 0, 4, 9
    assert store.window("sim", base + 20).requests == 2  # ended in seconds 12, 19
    spans = {0: (base, base + 10), 1: (base + 10, None)}
    assert store.step("sim", 0, spans[0], base + 20).requests == 3
    store.prune(base + 20, spans)
    assert store.window("sim", base + 10).requests == 0
    assert store.step("sim", 0, spans[0], base + 20).requests == 3  # folded in: it outlives the window
    assert store.step("sim", 1, spans[1], base + 20).requests == 2


def test_targets_are_kept_apart() -> None:
    store = LiveStore(window_s=30)
    store.add(record(1, target="a", ttft_ms=10))
    store.add(record(1, target="b", ttft_ms=1000))
    assert store.targets() == ["a", "b"]
    p50 = figures(store.window("a", int(T0.timestamp()) + 30), 30).ttft_ms.p50
    assert p50 is not None and p50 < 11
