"""Step summaries: a step's figures over its measured window, from the requests that overlapped it.

Pure math over :class:`stampede.metrics.RequestSample`; the window is :mod:`stampede.windows`'s.
Figures are placed by when things happened in the window: see :func:`summarize_step`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from stampede.metrics import MIN_COMPLETIONS, Percentiles, RequestSample
from stampede.windows import ServerCount, Window

if TYPE_CHECKING:
    from stampede.slo import Slo

# Tolerances of the checks a step's figures must pass to be trusted.
LITTLE_TOLERANCE = 0.10
SERVER_TOLERANCE_PCT = 5.0


@dataclass(frozen=True)
class StepSummary:
    """Figures of one load step over its measured window (see :func:`summarize_step`)."""

    users: int
    measured_s: float
    requests: int
    errors: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_ms: Percentiles
    itl_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    total_tokens_per_s: float = 0.0
    goodput_requests_per_s: float | None = None
    response_ms: Percentiles = Percentiles(None, None, None)
    network_and_queue_ms: Percentiles = Percentiles(None, None, None)
    model_loads: int = 0
    token_disagreements: int = 0
    late_chunks: int = 0
    """Chunks of successful requests whose read also took bytes that came after them (``late_chunks``)."""
    reconnects: int = 0
    """Requests of any outcome sent again because their reused connection had been closed (``reconnects``)."""
    mean_in_flight: float = 0.0
    """Requests in flight on average over the window, measured (:func:`mean_in_flight`)."""
    little_in_flight: float = 0.0
    """Little's law: ``completions/s x mean E2E of those completions`` (:func:`summarize_step`)."""
    opened_after_s: float = 0.0
    """Seconds from the step's start to its window's opening (the warm-up, by state and clock)."""
    load_reached: bool = True
    """The window opened by state (:func:`stampede.windows.window_opens_s`), not by the clock alone."""
    min_completions: int = MIN_COMPLETIONS
    needed_window_s: float = 0.0
    """Window the step's requests need (:func:`needed_window_s`)."""
    server_output_tokens_per_s: float | None = None
    """The runtime's own counter over the scrapes inside the window; None without one."""
    checked_output_tokens_per_s: float | None = None
    """``output_tokens_per_s`` recomputed over exactly the span of those scrapes."""

    @property
    def error_rate(self) -> float:
        """``errors / requests``; 0 for a step with no requests."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def little_mismatch(self) -> bool:
        """``|little_in_flight - mean_in_flight| > 10 % of mean_in_flight``: completions and E2E do not
        account for the load measured, so the window holds too few of them (or requests went missing)."""
        return abs(self.little_in_flight - self.mean_in_flight) > LITTLE_TOLERANCE * self.mean_in_flight

    @property
    def too_short(self) -> bool:
        """Fewer than ``min_completions`` completed in the window, or E2E p50 > a third of the window."""
        e2e_p50_s = (self.e2e_ms.p50 or 0.0) / 1000
        return self.requests < self.min_completions or e2e_p50_s > self.measured_s / 3

    @property
    def lengthen_to_s(self) -> float:
        """A step length that would hold enough: ``opened_after_s + needed_window_s``, up to whole 5 s."""
        return 5.0 * math.ceil((self.opened_after_s + self.needed_window_s) / 5.0)

    @property
    def server_difference_pct(self) -> float | None:
        """``100 x (checked - server) / server`` over the same span; None without a server count."""
        if self.server_output_tokens_per_s is None or self.checked_output_tokens_per_s is None:
            return None
        if self.server_output_tokens_per_s == 0:
            return None if self.checked_output_tokens_per_s == 0 else math.inf
        return 100.0 * (self.checked_output_tokens_per_s / self.server_output_tokens_per_s - 1.0)

    @property
    def server_disagrees(self) -> bool:
        """The client's token throughput and the runtime's differ by more than 5 %."""
        diff = self.server_difference_pct
        return diff is not None and abs(diff) > SERVER_TOLERANCE_PCT


def tokens_arrived(samples: Iterable[RequestSample], from_s: float, to_s: float) -> float:
    """Output tokens whose chunks arrived in ``[from_s, to_s)``, whatever step their request was sent
    in and however it ended: ``sum of chunk_tokens[i] over chunks i with from_s <= t(chunk i) < to_s``."""
    total = 0.0
    for s in samples:
        if s.sent_s >= to_s or s.ended_s < from_s:
            continue
        total += sum(n for at, n in zip(s.chunk_times_s(), s.chunk_tokens, strict=False) if from_s <= at < to_s)
    return total


def mean_in_flight(samples: Iterable[RequestSample], window: Window) -> float:
    """Requests in flight on average: ``sum over requests of |[sent, ended] ∩ window| / window length``."""
    if window.length_s <= 0:
        return 0.0
    busy_s = sum(max(0.0, min(s.ended_s, window.closed_s) - max(s.sent_s, window.opened_s)) for s in samples)
    return busy_s / window.length_s


def needed_window_s(e2e_s: float | None, in_flight: float, min_completions: int = MIN_COMPLETIONS) -> float:
    """The window a step's requests need: ``max(3 x E2E, min_completions x E2E / in flight)``.

    Three E2E so that a request's length is at most a third of the window, and enough time for
    ``min_completions`` to complete at the rate Little's law gives (``in flight / E2E`` per second).
    E2E is the p50 over the successful completions in the window, else over the successful requests
    that overlapped it; 0 without any.
    """
    if e2e_s is None:
        return 0.0
    return max(3 * e2e_s, min_completions * e2e_s / in_flight if in_flight > 0 else 0.0)


def summarize_step(
    users: int,
    window: Window,
    samples: Iterable[RequestSample],
    slo: Slo | None = None,
    min_completions: int = MIN_COMPLETIONS,
    server: ServerCount | None = None,
) -> StepSummary:
    """Summarise a step over its window from every request that overlapped it, by when things happened.

    - ``output_tokens_per_s = tokens that arrived in the window / window`` (:func:`tokens_arrived`):
      requests running at either edge count with the part that fell inside
    - a completion is a request (not ``cancelled``) that ended in the window; ``requests`` and
      ``errors`` count completions, ``requests_per_s = successful completions / window``
    - ``total_tokens_per_s = (output tokens + prompt tokens of requests whose first output arrived in
      the window) / window``
    - ``goodput_requests_per_s = successful completions meeting the SLO / window`` (None without an SLO)
    - latency percentiles over successful requests, each latency in the window where it ended: TTFT by
      its first output, an ITL gap by its later chunk, E2E, TPOT and response time by the completion;
      TTFT leaves out requests that waited for a model load (counted in ``model_loads``)
    - ``mean_in_flight`` (:func:`mean_in_flight`); ``little_in_flight = completions/s x mean E2E``
    - with ``server``: ``server_output_tokens_per_s = server.tokens / its span`` and
      ``checked_output_tokens_per_s = tokens that arrived in that span / its span``
    """
    overlapping = [s for s in samples if s.sent_s < window.closed_s and s.ended_s >= window.opened_s]
    done = [s for s in overlapping if not s.cancelled and window.holds(s.ended_s)]
    ok = [s for s in done if s.ok]
    length_s = window.length_s if window.length_s > 0 else float("nan")

    def rate(count: float) -> float:
        return count / length_s if overlapping else 0.0

    output = tokens_arrived(overlapping, window.opened_s, window.closed_s)
    firsts = [s for s in overlapping if s.ok and s.chunk_offsets_ns and window.holds(s.chunk_times_s()[0])]
    gaps = [g for s in overlapping if s.ok for at, g in zip(s.chunk_times_s()[1:], s.itl_ms, strict=False)
            if window.holds(at)]  # fmt: skip
    in_flight = mean_in_flight(overlapping, window)
    # Completions in the window, else every request overlapping it (those are biased towards long ones).
    e2e_typical = Percentiles.of([s.e2e_ms for s in (ok or [s for s in overlapping if s.ok])]).p50
    checked = server_rate = None
    if server is not None and server.to_s > server.from_s:
        span_s = server.to_s - server.from_s
        checked, server_rate = tokens_arrived(overlapping, server.from_s, server.to_s) / span_s, server.tokens / span_s
    return StepSummary(
        users=users,
        measured_s=window.length_s,
        requests=len(done),
        errors=len(done) - len(ok),
        requests_per_s=rate(len(ok)),
        output_tokens_per_s=rate(output),
        ttft_ms=Percentiles.of([s.ttft_ms for s in firsts if s.ttft_ms is not None and not s.had_model_load]),
        itl_ms=Percentiles.of(gaps),
        tpot_ms=Percentiles.of([s.tpot_ms for s in ok if s.tpot_ms is not None]),
        e2e_ms=Percentiles.of([s.e2e_ms for s in ok]),
        total_tokens_per_s=rate(output + sum(s.prompt_tokens for s in firsts)),
        goodput_requests_per_s=None if slo is None else rate(sum(slo.met_by_request(s) for s in ok)),
        response_ms=Percentiles.of([s.response_ms if s.response_ms is not None else s.e2e_ms for s in ok]),
        network_and_queue_ms=Percentiles.of([s.network_and_queue_ms for s in ok if s.network_and_queue_ms is not None]),
        model_loads=sum(s.had_model_load for s in ok),
        token_disagreements=sum(s.tokens_disagree for s in ok),
        late_chunks=sum(s.late_chunks for s in ok),
        reconnects=sum(s.reconnects for s in done),
        mean_in_flight=in_flight,
        little_in_flight=rate(len(done)) * float(np.mean([s.e2e_ms for s in done])) / 1000 if done else 0.0,
        min_completions=min_completions,
        needed_window_s=needed_window_s(
            None if e2e_typical is None else e2e_typical / 1000, in_flight, min_completions
        ),
        server_output_tokens_per_s=server_rate,
        checked_output_tokens_per_s=checked,
    )
