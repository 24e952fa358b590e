"""Counter rates: per second or per another counter, summed over a runtime's engines, restarts skipped."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboard.charts import counter_rates, gauge_lines

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def scrapes(metric: str, values: list[float], engines: int = 1) -> list[dict[str, object]]:
    return [
        {"target": "vllm", "host": "h", "sampled_at": T0 + timedelta(seconds=2 * i), "metric": metric,
         "labels": {"engine": str(e)}, "value": value}
        for i, value in enumerate(values)
        for e in range(engines)
    ]  # fmt: skip


def test_a_counter_becomes_its_increase_per_second_over_all_engines() -> None:
    frame = pd.DataFrame(scrapes("c", [0, 4, 10], engines=2))
    rates = counter_rates(frame, "c")
    assert rates["value"].tolist() == [4.0, 6.0]  # (8 - 0) / 2 s, then (20 - 8) / 2 s
    assert rates["sampled_at"].tolist() == [T0 + timedelta(seconds=2), T0 + timedelta(seconds=4)]


def test_a_restart_and_an_idle_interval_are_left_out_of_a_ratio() -> None:
    frame = pd.DataFrame(scrapes("hits", [0, 30, 5, 20, 20]) + scrapes("queries", [0, 40, 10, 30, 30]))
    rates = counter_rates(frame, "hits", per="queries")
    # 30/40; the restart (30 -> 5) is left out; 15/20; nothing queried in the last interval.
    assert rates["value"].tolist() == pytest.approx([0.75, 0.75])
    assert counter_rates(frame, "hits")["value"].tolist() == [15.0, 7.5, 0.0]


def test_two_runtimes_scraped_apart_keep_their_own_series() -> None:
    # Two vLLM servers behind one target, each scraped on its own: their counters differ by far.
    first = scrapes("c", [0, 20, 40])
    second = [
        {**row, "labels": {"instance": "b"}, "sampled_at": row["sampled_at"] + timedelta(seconds=1)}  # type: ignore[operator]
        for row in scrapes("c", [50_000, 50_010, 50_020])
    ]
    rates = counter_rates(pd.DataFrame(first + second), "c")
    assert rates["value"].tolist() == [10.0, 5.0, 10.0, 5.0]  # never 50,000 / 1 s


def test_a_gauge_line_names_only_the_labels_that_tell_its_series_apart() -> None:
    engines = scrapes("vllm:num_requests_running", [3, 4], engines=2)
    alone = [{**row, "target": "other", "labels": {"model_name": "m"}} for row in scrapes("g", [1])]
    lines = gauge_lines(pd.DataFrame(engines + alone))
    assert sorted(set(lines["line"])) == [
        "g",
        "vllm:num_requests_running (engine=0)",
        "vllm:num_requests_running (engine=1)",
    ]
