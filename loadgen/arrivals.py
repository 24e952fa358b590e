"""Open-loop pacing: requests are due at scheduled times, whether or not earlier ones came back.

A schedule draws the gaps between intended send times; a pacer hands those times to users. When
every user is busy, due times keep passing, so the next free user sends late and its record keeps
the delay: latency measured from the intended time then shows what a slow server did to arrivals
(no coordinated omission).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import Enum


class Arrival(str, Enum):
    """Distribution of the gaps between intended sends."""

    CONSTANT = "constant"
    POISSON = "poisson"
    GAMMA = "gamma"


class ArrivalSchedule:
    """Gaps between sends at ``rate_per_s`` on average.

    Poisson gaps are exponential; gamma gaps have shape ``1 / burstiness`` (burstiness 1 is Poisson,
    above 1 is burstier: the squared coefficient of variation of the gaps equals ``burstiness``).
    """

    def __init__(self, arrival: Arrival, burstiness: float = 1.0, seed: int = 0) -> None:
        if burstiness <= 0:
            raise ValueError("burstiness must be > 0")
        self.arrival = arrival
        self.burstiness = burstiness
        self._rng = random.Random(seed)

    def gap_s(self, rate_per_s: float) -> float:
        if rate_per_s <= 0:
            raise ValueError("rate must be > 0")
        if self.arrival is Arrival.CONSTANT:
            return 1.0 / rate_per_s
        if self.arrival is Arrival.POISSON:
            return self._rng.expovariate(rate_per_s)
        shape = 1.0 / self.burstiness
        return self._rng.gammavariate(shape, 1.0 / (rate_per_s * shape))


class Pacer:
    """Hands out intended send times (monotonic ns) at the current rate, one per call."""

    def __init__(self, schedule: ArrivalSchedule, clock_ns: Callable[[], int]) -> None:
        self._schedule = schedule
        self._clock_ns = clock_ns
        self._rate_per_s = 0.0
        self._next_ns: int | None = None

    @property
    def rate_per_s(self) -> float:
        return self._rate_per_s

    def set_schedule(self, schedule: ArrivalSchedule) -> None:
        """Draw gaps from ``schedule`` from the next due time on."""
        self._schedule = schedule

    def set_rate(self, rate_per_s: float) -> bool:
        """Change the rate from the next due time on; 0 pauses the pacer. Returns whether it changed."""
        if rate_per_s == self._rate_per_s:
            return False
        self._rate_per_s = rate_per_s
        self._next_ns = None  # restart the schedule now, at the new rate
        return True

    def reserve(self) -> int | None:
        """Claim the next due time; None when paused. The time may be in the past: send at once."""
        if self._rate_per_s <= 0:
            return None
        if self._next_ns is None:
            self._next_ns = self._clock_ns()
        due = self._next_ns
        self._next_ns += int(self._schedule.gap_s(self._rate_per_s) * 1e9)
        return due
