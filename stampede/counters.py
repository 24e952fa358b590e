"""A runtime's cumulative counters (Prometheus style) turned into rates between consecutive scrapes.

Pure math over scraped values; the dashboard's runtime charts draw what it returns. A step's own
check against the runtime's token counter is :func:`stampede.windows.counter_increase`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

ScrapeKey = tuple[str, str, datetime]
"""(target, host, when scraped)."""


@dataclass(frozen=True)
class Scrape:
    """One scraped value of one series (a label set) of a runtime's metric."""

    target: str
    host: str
    sampled_at: datetime
    metric: str
    labels: Mapping[str, str] | None
    value: float


@dataclass(frozen=True)
class Rate:
    """How fast a counter grew in the interval that ended at ``sampled_at``."""

    target: str
    host: str
    sampled_at: datetime
    value: float


def _labels_key(labels: object) -> str:
    return repr(sorted(labels.items())) if isinstance(labels, Mapping) else repr(labels)


def _increases(scrapes: Iterable[Scrape], metric: str) -> dict[ScrapeKey, tuple[float, float]]:
    """Per scrape, ``metric``'s increase since the one before, summed over its series, and the longest
    interval among them; a scrape where any series went down (the runtime restarted) is left out."""
    last: dict[tuple[str, str, str], Scrape] = {}
    summed: dict[ScrapeKey, tuple[float, float, float]] = {}
    for s in sorted((s for s in scrapes if s.metric == metric), key=lambda s: (s.target, s.host, s.sampled_at)):
        series = (s.target, s.host, _labels_key(s.labels))
        before = last.get(series)
        last[series] = s
        if before is None:
            continue
        increase, seconds = s.value - before.value, (s.sampled_at - before.sampled_at).total_seconds()
        key = (s.target, s.host, s.sampled_at)
        total, lowest, longest = summed.get(key, (0.0, increase, seconds))
        summed[key] = (total + increase, min(lowest, increase), max(longest, seconds))
    return {key: (total, seconds) for key, (total, lowest, seconds) in summed.items() if lowest >= 0}


def counter_rates(scrapes: Iterable[Scrape], metric: str, per: str | None = None) -> list[Rate]:
    """How fast ``metric`` grew between consecutive scrapes, per target and host, in scrape order.

    Each series (a label set: an engine, a model) is followed on its own, and the increases of one
    scrape's series are summed: ``value = Σ increase / interval`` (per second), or with ``per``,
    ``Σ increase / Σ increase of per`` (hits per query). An interval where a series went down (the
    runtime restarted) is left out, as is one where ``per`` did not grow. Two runtimes scraped under one
    target from one host with the same labels cannot be told apart: give each its own target.
    """
    scrapes = list(scrapes)
    grown = _increases(scrapes, metric)
    if per is None:
        return [Rate(*key, total / seconds) for key, (total, seconds) in sorted(grown.items()) if seconds > 0]
    by = _increases(scrapes, per)
    return [Rate(*key, total / by[key][0]) for key, (total, _) in sorted(grown.items()) if key in by and by[key][0] > 0]
