"""Metric math: raw request timings in, typed summaries out. No I/O, no framework imports.

Every function states its formula; every name carries its unit. Latency percentiles are taken over
successful requests only (errors are counted, not timed), with linear interpolation between ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

NS_PER_MS = 1_000_000
PERCENTILES = (50, 90, 99)


def ttft_ms(chunk_offsets_ns: Sequence[int]) -> float | None:
    """Time to first token: ``TTFT = t(first output chunk) - t(send)``; None when no output arrived."""
    if not chunk_offsets_ns:
        return None
    return chunk_offsets_ns[0] / NS_PER_MS


def e2e_ms(end_offset_ns: int) -> float:
    """End-to-end latency: ``E2E = t(last byte of the response) - t(send)``."""
    return end_offset_ns / NS_PER_MS


def itl_ms(chunk_offsets_ns: Sequence[int]) -> list[float]:
    """Inter-token latency as chunk gaps: ``ITL_i = t(chunk i) - t(chunk i-1)`` for i >= 1."""
    return [(b - a) / NS_PER_MS for a, b in zip(chunk_offsets_ns, chunk_offsets_ns[1:], strict=False)]


def tpot_ms(chunk_offsets_ns: Sequence[int], end_offset_ns: int, output_tokens: int | None) -> float | None:
    """Time per output token: ``TPOT = (E2E - TTFT) / (output tokens - 1)``.

    Output tokens are the server's count, or the number of output chunks when the server gave none.
    None when fewer than two tokens came out (the formula is undefined).
    """
    first = ttft_ms(chunk_offsets_ns)
    tokens = output_tokens if output_tokens is not None else len(chunk_offsets_ns)
    if first is None or tokens < 2:
        return None
    return (e2e_ms(end_offset_ns) - first) / (tokens - 1)


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99 of one latency, in the unit of the metric it summarises; None without samples."""

    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Percentiles:
        """Percentiles with linear interpolation (numpy's default method)."""
        arr = np.asarray(values, dtype=float)
        if arr.size == 0:
            return cls(None, None, None)
        p50, p90, p99 = (float(v) for v in np.percentile(arr, PERCENTILES))
        return cls(p50, p90, p99)


@dataclass(frozen=True)
class RequestSample:
    """The per-request figures a step summary needs, whatever they were loaded from."""

    ok: bool
    ttft_ms: float | None
    e2e_ms: float
    tpot_ms: float | None
    output_tokens: int
    itl_ms: Sequence[float] = field(default_factory=tuple)


@dataclass(frozen=True)
class StepSummary:
    """Figures of one load step over its measured window (warm-up excluded)."""

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

    @property
    def error_rate(self) -> float:
        """``errors / requests``; 0 for a step with no requests."""
        return self.errors / self.requests if self.requests else 0.0


def summarize_step(users: int, measured_s: float, samples: Iterable[RequestSample]) -> StepSummary:
    """Summarise the requests sent during a step's measured window.

    - ``requests_per_s = successful requests / measured_s``
    - ``output_tokens_per_s = sum(output tokens of successful requests) / measured_s``
    - latency percentiles over successful requests; ITL pools every chunk gap of every such request.
    """
    all_samples = list(samples)
    ok = [s for s in all_samples if s.ok]
    window = measured_s if measured_s > 0 else float("nan")
    gaps = [g for s in ok for g in s.itl_ms]
    return StepSummary(
        users=users,
        measured_s=measured_s,
        requests=len(all_samples),
        errors=len(all_samples) - len(ok),
        requests_per_s=len(ok) / window if ok else 0.0,
        output_tokens_per_s=sum(s.output_tokens for s in ok) / window if ok else 0.0,
        ttft_ms=Percentiles.of([s.ttft_ms for s in ok if s.ttft_ms is not None]),
        itl_ms=Percentiles.of(gaps),
        tpot_ms=Percentiles.of([s.tpot_ms for s in ok if s.tpot_ms is not None]),
        e2e_ms=Percentiles.of([s.e2e_ms for s in ok]),
    )
