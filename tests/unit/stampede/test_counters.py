"""Counter rates on plain scrapes: per second or per another counter, series summed, restarts left out."""

from datetime import UTC, datetime, timedelta

from stampede.counters import Rate, Scrape, counter_rates

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def scrapes(metric: str, values: list[float], labels: dict[str, str] | None = None) -> list[Scrape]:
    return [Scrape("t", "h", T0 + timedelta(seconds=2 * i), metric, labels, v) for i, v in enumerate(values)]


def test_series_are_summed_per_scrape_and_divided_by_the_interval() -> None:
    rows = scrapes("c", [0, 4, 10], {"engine": "0"}) + scrapes("c", [0, 4, 10], {"engine": "1"})
    assert counter_rates(rows, "c") == [Rate("t", "h", T0 + timedelta(seconds=2), 4.0),
                                        Rate("t", "h", T0 + timedelta(seconds=4), 6.0)]  # fmt: skip


def test_a_restart_is_left_out_and_a_ratio_needs_its_divisor_to_grow() -> None:
    rows = scrapes("hits", [0, 30, 5, 20, 20]) + scrapes("queries", [0, 40, 10, 30, 30])
    assert [r.value for r in counter_rates(rows, "hits")] == [15.0, 7.5, 0.0]
    assert [r.value for r in counter_rates(rows, "hits", per="queries")] == [0.75, 0.75]
    assert counter_rates(rows, "missing") == []
