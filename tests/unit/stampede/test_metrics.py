"""The metric formulas on hand-made timings with known answers."""

import math

import pytest

from stampede import metrics
from stampede.metrics import Percentiles, RequestSample, summarize_step

MS = 1_000_000


def test_ttft_is_first_output_chunk_offset() -> None:
    assert metrics.ttft_ms([120 * MS, 150 * MS]) == 120.0
    assert metrics.ttft_ms([]) is None


def test_itl_is_each_gap_between_chunks() -> None:
    assert metrics.itl_ms([100 * MS, 110 * MS, 135 * MS]) == [10.0, 25.0]
    assert metrics.itl_ms([100 * MS]) == []


def test_tpot_divides_decode_time_by_tokens_after_the_first() -> None:
    # E2E 1000 ms, TTFT 100 ms, 10 tokens by the server's count -> 900 / 9 = 100 ms per token
    assert metrics.tpot_ms([100 * MS, 200 * MS], 1000 * MS, output_tokens=10) == pytest.approx(100.0)


def test_tpot_falls_back_to_chunk_count_and_is_undefined_below_two_tokens() -> None:
    offsets = [100 * MS, 200 * MS, 300 * MS]
    assert metrics.tpot_ms(offsets, 400 * MS, output_tokens=None) == pytest.approx(150.0)
    assert metrics.tpot_ms([100 * MS], 400 * MS, output_tokens=1) is None
    assert metrics.tpot_ms([], 400 * MS, output_tokens=5) is None


def test_percentiles_interpolate_linearly() -> None:
    p = Percentiles.of([float(v) for v in range(1, 101)])
    assert p.p50 == pytest.approx(50.5)
    assert p.p90 == pytest.approx(90.1)
    assert p.p99 == pytest.approx(99.01)
    assert Percentiles.of([]) == Percentiles(None, None, None)


def _sample(ok: bool = True, ttft: float = 100.0, e2e: float = 1000.0, tokens: int = 10) -> RequestSample:
    return RequestSample(ok=ok, ttft_ms=ttft, e2e_ms=e2e, tpot_ms=(e2e - ttft) / (tokens - 1), output_tokens=tokens,
                         itl_ms=(10.0, 30.0))  # fmt: skip


def test_step_summary_counts_only_successes_in_throughput_and_latency() -> None:
    samples = [_sample(ttft=100.0), _sample(ttft=300.0), _sample(ok=False, ttft=9999.0, tokens=2)]
    s = summarize_step(users=4, measured_s=2.0, samples=samples)
    assert (s.requests, s.errors) == (3, 1)
    assert s.error_rate == pytest.approx(1 / 3)
    assert s.requests_per_s == pytest.approx(1.0)  # 2 successes / 2 s
    assert s.output_tokens_per_s == pytest.approx(10.0)  # 20 tokens / 2 s
    assert s.ttft_ms.p50 == pytest.approx(200.0)
    assert s.itl_ms.p50 == pytest.approx(20.0)  # pooled gaps 10, 30, 10, 30
    assert s.e2e_ms.p99 == pytest.approx(1000.0)


def test_step_summary_of_an_empty_step_has_no_latencies() -> None:
    s = summarize_step(users=1, measured_s=5.0, samples=[])
    assert s.requests == 0 and s.requests_per_s == 0.0 and s.error_rate == 0.0
    assert s.ttft_ms.p50 is None


def test_step_summary_accepts_a_generator() -> None:
    s = summarize_step(users=1, measured_s=1.0, samples=(x for x in [_sample(), _sample(ok=False)]))
    assert (s.requests, s.errors) == (2, 1)
    assert not math.isnan(s.requests_per_s)
