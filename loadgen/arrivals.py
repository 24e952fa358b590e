"""Open-loop pacing: requests are due at scheduled times, whether or not earlier ones came back.

A schedule draws the gaps between intended send times; a pacer hands those times to users. When
every user is busy, due times keep passing, so the next free user sends late and its record keeps
the delay: latency measured from the intended time then shows what a slow server did to arrivals
(no coordinated omission).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import Enum

import gevent
import gevent.event
import gevent.queue

from stampede.records import StepMessage

PAUSED_POLL_S = 0.05
"""How often an open-loop pacer with no rate (a closed-loop step) looks again."""


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


class OpenLoop:
    """A process's open-loop sends: one greenlet paces them and hands each due time to the first user
    waiting, so idle users hold no sends booked ahead: a new rate applies from the next send, and the
    run stops with its last step. Step messages set its rate and arrivals."""

    def __init__(self, worker_index: Callable[[], int]) -> None:
        self._worker_index = worker_index
        self.pacer = Pacer(ArrivalSchedule(Arrival.POISSON), time.perf_counter_ns)
        self._due: gevent.queue.Queue[int] = gevent.queue.Queue(maxsize=1)
        self._ticker: gevent.Greenlet[[], None] | None = None
        self._rate_changed = gevent.event.Event()
        self._arrivals: tuple[str, float, int] | None = None

    @property
    def rate_per_s(self) -> float:
        return self.pacer.rate_per_s

    def follow(self, step: StepMessage) -> None:
        """Pace this process's share of the step's rate, with the step's arrivals."""
        arrivals = (step.arrival, step.burstiness, step.seed)
        if arrivals != self._arrivals:
            # Each worker draws its own gaps: the same sequence everywhere would line bursts up.
            seed = hash((step.seed, self._worker_index()))
            self.pacer.set_schedule(ArrivalSchedule(Arrival(step.arrival), step.burstiness, seed))
            self._arrivals = arrivals
        if self.pacer.set_rate(step.rate_per_s * step.share):
            self._rate_changed.set()

    def next_due_ns(self) -> int:
        """Wait until a send is due, then return when it was due (in the past when every user was busy:
        the send is late, and its delay is recorded)."""
        if self._ticker is None:
            self._ticker = gevent.spawn(self._pace)
        return self._due.get()

    def stop(self) -> None:
        """End pacing; a run started again (the web UI) starts its schedule afresh."""
        if self._ticker is not None:
            self._ticker.kill()
            self._ticker = None
        self._due = gevent.queue.Queue(maxsize=1)
        self.pacer.set_rate(0.0)

    def _pace(self) -> None:
        self._rate_changed.clear()  # the rate this pacer starts with is no change
        while True:
            due_ns = self.pacer.reserve()
            if due_ns is None:  # paused: a closed-loop step
                gevent.sleep(PAUSED_POLL_S)
                continue
            wait_ns = due_ns - time.perf_counter_ns()
            if wait_ns > 0 and self._rate_changed.wait(wait_ns / 1e9):
                self._rate_changed.clear()  # a new rate: its schedule starts now, not after this gap
                continue
            self._due.put(due_ns)  # waits while every user is busy; the due time keeps its place
