"""A step's measured window and what places things in it: the window itself, when a step's load holds
(its opening), and a runtime's counter over it. Pure math, like :mod:`stampede.summary`, whose step
figures are computed over these windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stampede.metrics import RequestSample


@dataclass(frozen=True)
class Window:
    """A step's measured window on the wall clock, s since the epoch: ``[opened_s, closed_s)``."""

    opened_s: float
    closed_s: float

    @property
    def length_s(self) -> float:
        return max(0.0, self.closed_s - self.opened_s)

    def holds(self, at_s: float) -> bool:
        return self.opened_s <= at_s < self.closed_s


@dataclass(frozen=True)
class ServerCount:
    """A runtime's own output-token counter over part of a window: its increase between two scrapes."""

    from_s: float
    to_s: float
    tokens: float


def window_opens_s(
    samples: Sequence[RequestSample], planned_in_flight: int | None, started_s: float, ended_s: float
) -> float | None:
    """When a step's load holds steady, by state; None when it never does before ``ended_s``.

    Closed loop (``planned_in_flight`` requests): the first time from the step's start when that many
    are in flight and one of them has produced output, i.e. ``max(t_load, first output at or after
    t_load of a request in flight at t_load)``. Open loop (None): once the first request sent in the
    step has ended and every request sent before the step has, so the requests in flight are all
    sent at the step's rate (in flight grows for about one E2E after a rate changes).
    The caller adds ``--warmup-s``.
    """
    if planned_in_flight is None:
        earlier = [s.ended_s for s in samples if s.sent_s < started_s and s.ended_s > started_s]
        own = [s for s in samples if s.sent_s >= started_s]
        if not own:
            return None
        opens = max([min(own, key=lambda s: s.sent_s).ended_s, *earlier])
        return opens if opens < ended_s else None
    events = sorted([(s.sent_s, 1) for s in samples] + [(s.ended_s, -1) for s in samples])
    in_flight = 0
    for at, change in events:
        in_flight += change
        if at >= started_s and in_flight >= planned_in_flight:
            running = [s for s in samples if s.sent_s <= at < s.ended_s]
            firsts = [max(at, s.sent_s + s.chunk_offsets_ns[0] / 1e9) for s in running if s.chunk_offsets_ns]
            opens = min(firsts, default=math.inf)
            if opens < ended_s:
                return opens
    return None


def counter_increase(values: Sequence[float]) -> float:
    """A cumulative counter's increase over consecutive readings, as Prometheus counts it: a reading
    below the one before is a restart from 0, so it adds itself, not the drop."""
    return sum(b - a if b >= a else b for a, b in zip(values, values[1:], strict=False))
