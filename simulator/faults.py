"""Fault injection: which requests fail, how, and when, decided by a seeded draw per request.

Faults come from rates in the profile (optionally only inside a time window since start), or from a
request's ``X-Sim-Fault`` header, which forces one fault for that request so tests need no luck.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from enum import Enum
from typing import Any


class FaultKind(str, Enum):
    """The ways a request can go wrong."""

    HTTP_429 = "http_429"
    """Refused with 429 and a Retry-After header."""
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    RESET = "reset"
    """The TCP connection is reset (RST) after ``after_tokens`` tokens."""
    STALL = "stall"
    """No bytes for ``stall_s`` seconds after ``after_tokens`` tokens, then the stream resumes."""
    MALFORMED = "malformed"
    """One chunk that is not valid JSON after ``after_tokens`` tokens; the stream then goes on."""
    TRUNCATE = "truncate"
    """The stream ends cleanly at the HTTP level but without its final object / usage / [DONE]."""

    @property
    def mid_stream(self) -> bool:
        """Whether the fault happens inside a streamed body (and so only applies to streaming requests)."""
        return self in (FaultKind.RESET, FaultKind.STALL, FaultKind.MALFORMED, FaultKind.TRUNCATE)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Per-kind probabilities and the parameters shared by all faults."""

    rates: dict[FaultKind, float] = dataclasses.field(default_factory=dict)
    """Probability that a request gets each fault; kinds are tried in declaration order."""
    after_tokens: int = 3
    """Tokens streamed before a mid-stream fault strikes."""
    stall_s: float = 5.0
    retry_after_s: int = 1
    window_start_s: float = 0.0
    """Rates apply only between these seconds since the server started (a fault schedule)."""
    window_end_s: float = float("inf")

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate of {kind.value} must be within [0, 1], got {rate}")
        if sum(self.rates.values()) > 1.0:
            raise ValueError("fault rates add up to more than 1")
        if self.after_tokens < 0 or self.stall_s < 0 or self.retry_after_s < 0:
            raise ValueError("fault parameters must not be negative")

    def merged(self, overrides: dict[str, Any] | FaultPlan) -> FaultPlan:
        """This plan with ``overrides`` applied; ``rates`` merge per kind (keys are kind values)."""
        if isinstance(overrides, FaultPlan):
            return overrides
        changes = dict(overrides)
        if "rates" in changes:
            rates = dict(self.rates)
            rates.update({FaultKind(k): float(v) for k, v in changes["rates"].items()})
            changes["rates"] = rates
        return dataclasses.replace(self, **changes)


class FaultPicker:
    """Draws each request's fault from a seeded RNG, in arrival order, so a seed replays the same faults."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self._rng = random.Random(seed ^ 0x5F4E)

    def pick(self, elapsed_s: float, forced: str | None = None) -> FaultKind | None:
        """The fault for a request arriving ``elapsed_s`` after start; ``forced`` is an X-Sim-Fault value.

        Raises ValueError for an unknown forced fault name.
        """
        if forced:
            return FaultKind(forced.strip().lower())
        if not self.plan.rates or not self.plan.window_start_s <= elapsed_s < self.plan.window_end_s:
            return None
        draw = self._rng.random()
        for kind in FaultKind:
            rate = self.plan.rates.get(kind, 0.0)
            if draw < rate:
                return kind
            draw -= rate
        return None
