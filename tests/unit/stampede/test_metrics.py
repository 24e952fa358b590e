"""The metric formulas on hand-made timings with known answers."""

import math
from dataclasses import replace

import pytest

from stampede import metrics, windows
from stampede.metrics import Percentiles, RequestSample
from stampede.summary import summarize_step
from stampede.windows import ServerCount, Window

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


def _sample(
    ok: bool = True, ttft: float = 100.0, e2e: float = 1000.0, tokens: int = 10, sent_s: float = 1.0, **kw: object
) -> RequestSample:
    """A request sent at ``sent_s`` whose ``tokens`` chunks (one token each) arrive evenly from TTFT to E2E."""
    offsets = [round((ttft + i * (e2e - ttft) / (tokens - 1)) * MS) for i in range(tokens)]
    fields: dict = dict(ok=ok, ttft_ms=ttft, e2e_ms=e2e, tpot_ms=(e2e - ttft) / (tokens - 1), output_tokens=tokens,
                        itl_ms=metrics.itl_ms(offsets), sent_s=sent_s, chunk_offsets_ns=offsets,
                        chunk_tokens=[1.0] * tokens)  # fmt: skip
    return RequestSample(**(fields | kw))


WINDOW = Window(0.0, 2.0)


def test_step_summary_counts_only_successes_in_latency_and_request_rate() -> None:
    samples = [_sample(ttft=100.0), _sample(ttft=300.0), _sample(ok=False, ttft=9999.0, e2e=10000.0, tokens=2)]
    s = summarize_step(4, Window(0.0, 12.0), samples)
    assert (s.requests, s.errors) == (3, 1)
    assert s.error_rate == pytest.approx(1 / 3)
    assert s.requests_per_s == pytest.approx(2 / 12)  # 2 successes / 12 s
    assert s.output_tokens_per_s == pytest.approx(22 / 12)  # every token that arrived, the failed one's too
    assert s.ttft_ms.p50 == pytest.approx(200.0)
    assert s.e2e_ms.p99 == pytest.approx(1000.0)


def test_tokens_count_in_the_window_they_arrived_in_whatever_step_sent_them() -> None:
    # Sent 0.5 s before the window, ends 0.5 s into it: the tokens that arrived inside count.
    early = _sample(ttft=0.0, e2e=1000.0, tokens=11, sent_s=-0.5)
    # Sent inside, still running when the window closes: its tokens up to the close count.
    late = _sample(ttft=0.0, e2e=1000.0, tokens=11, sent_s=1.5)
    s = summarize_step(2, WINDOW, [early, late])
    # Chunks every 0.1 s: at 0.0 to 0.5 s of the first (6), at 1.5 to 1.9 s of the second (5).
    assert s.output_tokens_per_s == pytest.approx((6 + 5) / 2.0)
    assert (s.requests, s.requests_per_s) == (1, 0.5)  # only the first completed inside
    assert s.mean_in_flight == pytest.approx((0.5 + 0.5) / 2.0)


def test_a_chunk_of_several_tokens_spreads_the_requests_count() -> None:
    assert metrics.chunk_token_counts(4, 10) == [2.5] * 4  # the server's 10 tokens over 4 chunks
    assert metrics.chunk_token_counts(3, 8, [1, 2, 1]) == [2.0, 4.0, 2.0]  # tokenizer proportions, server total
    assert metrics.chunk_token_counts(0, 5) == []


def test_a_cancelled_request_brings_its_tokens_but_is_no_completion() -> None:
    cancelled = _sample(ok=False, ttft=0.0, e2e=900.0, tokens=10, sent_s=0.5, cancelled=True)
    s = summarize_step(1, WINDOW, [cancelled])
    assert s.output_tokens_per_s == pytest.approx(10 / 2.0)
    assert (s.requests, s.errors) == (0, 0)


def test_littles_law_holds_for_a_steady_load_and_is_flagged_when_completions_miss_it() -> None:
    # One user, back to back 0.1 s requests over 10 s: 1 in flight = 10/s x 0.1 s.
    steady = [_sample(ttft=10.0, e2e=100.0, tokens=5, sent_s=i / 10) for i in range(100)]
    s = summarize_step(1, Window(0.0, 10.0), steady)
    # The last ends as the window closes, so 99 completions: within Little's 10 %, not exactly.
    assert s.mean_in_flight == pytest.approx(1.0) and s.little_in_flight == pytest.approx(0.99)
    assert not s.little_mismatch
    # 50 stories of 25 s that all end after a 10 s window: 50 in flight, no completions.
    stories = [_sample(ttft=50.0, e2e=25_000.0, tokens=500, sent_s=-1.0) for _ in range(50)]
    s = summarize_step(50, Window(0.0, 10.0), stories)
    assert s.mean_in_flight == pytest.approx(50.0) and s.little_in_flight == 0.0 and s.little_mismatch


def test_a_window_with_few_completions_or_long_requests_is_too_short_and_says_how_long_to_make_it() -> None:
    stories = [_sample(ttft=50.0, e2e=25_000.0, tokens=500, sent_s=-1.0 - i / 5) for i in range(50)]
    s = replace(summarize_step(50, Window(0.0, 25.0), stories), opened_after_s=6.0)
    assert s.too_short
    # Three E2E (75 s) exceed 30 completions at 50 / 25 s = 2/s (15 s): 6 s before the window + 75 s, to 5 s.
    assert s.needed_window_s == pytest.approx(75.0) and s.lengthen_to_s == 85.0
    steady = [_sample(ttft=10.0, e2e=100.0, tokens=5, sent_s=i / 10) for i in range(100)]
    assert not summarize_step(1, Window(0.0, 10.0), steady).too_short
    assert summarize_step(1, Window(0.0, 10.0), steady, min_completions=200).too_short


def test_the_window_opens_once_the_planned_users_are_in_flight_and_one_produced_output() -> None:
    # Users join at 0, 0.4 and 0.8 s; first output 0.3 s after each send.
    users = [_sample(ttft=300.0, e2e=5000.0, sent_s=0.4 * i) for i in range(3)]
    assert windows.window_opens_s(users, 3, 0.0, 10.0) == pytest.approx(0.8)  # the first had output by then
    assert windows.window_opens_s(users, 4, 0.0, 10.0) is None  # never four in flight
    slow = [_sample(ttft=2000.0, e2e=5000.0, sent_s=0.4 * i) for i in range(3)]
    assert windows.window_opens_s(slow, 3, 0.0, 10.0) == pytest.approx(2.0)  # the first output came at 2 s


def test_an_open_loop_window_opens_once_the_requests_in_flight_were_all_sent_at_the_steps_rate() -> None:
    before = _sample(e2e=3000.0, sent_s=-1.0)  # sent in the previous step, ends at 2 s
    own = [_sample(e2e=1500.0, sent_s=0.2 * i) for i in range(20)]  # the first ends at 1.5 s
    assert windows.window_opens_s([before, *own], None, 0.0, 10.0) == pytest.approx(2.0)
    assert windows.window_opens_s(own, None, 0.0, 10.0) == pytest.approx(1.5)


def test_the_client_is_checked_against_the_servers_counter_over_the_same_span() -> None:
    steady = [_sample(ttft=0.0, e2e=90.0, tokens=10, sent_s=i / 10) for i in range(100)]  # 100 tokens/s
    agree = summarize_step(1, Window(0.0, 10.0), steady, server=ServerCount(2.0, 8.0, 600.0))
    assert agree.server_output_tokens_per_s == pytest.approx(100.0)
    assert agree.checked_output_tokens_per_s == pytest.approx(100.0)
    assert agree.server_difference_pct == pytest.approx(0.0) and not agree.server_disagrees
    off = summarize_step(1, Window(0.0, 10.0), steady, server=ServerCount(2.0, 8.0, 660.0))
    assert off.server_difference_pct == pytest.approx(100 * (100 / 110 - 1)) and off.server_disagrees
    assert summarize_step(1, Window(0.0, 10.0), steady).server_difference_pct is None


def test_a_counter_that_restarts_adds_what_it_counted_since() -> None:
    assert windows.counter_increase([100.0, 150.0, 20.0, 50.0]) == pytest.approx(50.0 + 20.0 + 30.0)
    assert windows.counter_increase([7.0]) == 0.0


def test_step_summary_of_an_empty_step_has_no_latencies() -> None:
    s = summarize_step(1, Window(0.0, 5.0), [])
    assert s.requests == 0 and s.requests_per_s == 0.0 and s.error_rate == 0.0
    assert s.ttft_ms.p50 is None


def test_step_summary_accepts_a_generator() -> None:
    s = summarize_step(1, Window(0.0, 3.0), (x for x in [_sample(), _sample(ok=False)]))
    assert (s.requests, s.errors) == (2, 1)
    assert not math.isnan(s.requests_per_s)
