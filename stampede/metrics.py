"""Metric math: raw request timings in, typed summaries out. No I/O, no framework imports.

Every function states its formula; every name carries its unit. Latency percentiles are taken over
successful requests only (errors are counted, not timed), with linear interpolation between ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

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


def itl_ms(chunk_offsets_ns: Sequence[int], chunk_tokens: Sequence[int] = ()) -> list[float]:
    """Inter-token latency: ``ITL_i = (t(chunk i) - t(chunk i-1)) / tokens in chunk i`` for i >= 1.

    Tokens per chunk come from a client-side tokenizer when one was used, else each chunk is one token.
    """
    gaps = [(b - a) / NS_PER_MS for a, b in zip(chunk_offsets_ns, chunk_offsets_ns[1:], strict=False)]
    if not chunk_tokens:
        return gaps
    return [gap / max(1, tokens) for gap, tokens in zip(gaps, chunk_tokens[1:], strict=False)]


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


def response_ms(end_offset_ns: int, send_delay_ns: int) -> float:
    """Latency from the intended send: ``E2E + (t(actual send) - t(intended send))``.

    Equals E2E in closed loop. In open loop a late send (every user busy) adds to it, so a slow
    server cannot hide behind the requests it delayed (coordinated omission).
    """
    return (end_offset_ns + send_delay_ns) / NS_PER_MS


class TokenSource(str, Enum):
    """Where an output token count came from, best first."""

    SERVER = "server"
    TOKENIZER = "tokenizer"
    CHUNKS = "chunks"


def output_token_count(server: int | None, tokenizer: int | None, chunks: int) -> tuple[int, TokenSource]:
    """The output token count to report: the server's, else the client tokenizer's, else chunks seen."""
    if server is not None:
        return server, TokenSource.SERVER
    if tokenizer is not None:
        return tokenizer, TokenSource.TOKENIZER
    return chunks, TokenSource.CHUNKS


def tokens_disagree(server: int | None, tokenizer: int | None, chunks: int) -> bool:
    """True when the server's count differs from the client's (tokenizer count, else chunk count).

    Without a tokenizer, fewer chunks than tokens is normal (a chunk may carry several tokens); more
    chunks than the server counted is not.
    """
    if server is None:
        return False
    if tokenizer is not None:
        return tokenizer != server
    return chunks > server


# A request whose server reports at least this much model-load time had the model loaded for it.
MODEL_LOAD_MIN_MS = 100.0


def network_and_queue_ms(e2e: float, server_total_ms: float | None) -> float | None:
    """Time outside the server's own account: ``E2E - server total``; None without a server total."""
    return None if server_total_ms is None else e2e - server_total_ms


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
    prompt_tokens: int = 0
    response_ms: float | None = None
    model_load_ms: float = 0.0
    network_and_queue_ms: float | None = None
    tokens_disagree: bool = False
    late_chunks: int = 0
    reconnects: int = 0

    @property
    def had_model_load(self) -> bool:
        return self.model_load_ms >= MODEL_LOAD_MIN_MS


@dataclass(frozen=True)
class Slo:
    """Service-level objectives; a request meets them when each set limit holds (None: no limit)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met_by(self, s: RequestSample) -> bool:
        """``ok and TTFT <= ttft_ms and TPOT <= tpot_ms and E2E <= e2e_ms`` (unset limits pass)."""
        checks = ((self.ttft_ms, s.ttft_ms), (self.tpot_ms, s.tpot_ms), (self.e2e_ms, s.e2e_ms))
        return s.ok and all(limit is None or (value is not None and value <= limit) for limit, value in checks)


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

    @property
    def error_rate(self) -> float:
        """``errors / requests``; 0 for a step with no requests."""
        return self.errors / self.requests if self.requests else 0.0


def summarize_step(
    users: int, measured_s: float, samples: Iterable[RequestSample], slo: Slo | None = None
) -> StepSummary:
    """Summarise the requests sent during a step's measured window.

    - ``requests_per_s = successful requests / measured_s``
    - ``output_tokens_per_s = sum(output tokens of successful requests) / measured_s``
    - ``total_tokens_per_s = sum(prompt + output tokens of successful requests) / measured_s``
    - ``goodput_requests_per_s = requests meeting the SLO / measured_s`` (None without an SLO)
    - latency percentiles over successful requests; ITL pools every per-token gap of every such
      request; TTFT leaves out requests that waited for a model load (counted in ``model_loads``).
    - ``reconnects = requests of any outcome sent again on a new connection`` (never errors)
    """
    all_samples = list(samples)
    ok = [s for s in all_samples if s.ok]
    window = measured_s if measured_s > 0 else float("nan")

    def rate(count: float) -> float:
        return count / window if ok else 0.0

    return StepSummary(
        users=users,
        measured_s=measured_s,
        requests=len(all_samples),
        errors=len(all_samples) - len(ok),
        requests_per_s=rate(len(ok)),
        output_tokens_per_s=rate(sum(s.output_tokens for s in ok)),
        ttft_ms=Percentiles.of([s.ttft_ms for s in ok if s.ttft_ms is not None and not s.had_model_load]),
        itl_ms=Percentiles.of([g for s in ok for g in s.itl_ms]),
        tpot_ms=Percentiles.of([s.tpot_ms for s in ok if s.tpot_ms is not None]),
        e2e_ms=Percentiles.of([s.e2e_ms for s in ok]),
        total_tokens_per_s=rate(sum(s.prompt_tokens + s.output_tokens for s in ok)),
        goodput_requests_per_s=None if slo is None else rate(sum(slo.met_by(s) for s in ok)),
        response_ms=Percentiles.of([s.response_ms if s.response_ms is not None else s.e2e_ms for s in ok]),
        network_and_queue_ms=Percentiles.of([s.network_and_queue_ms for s in ok if s.network_and_queue_ms is not None]),
        model_loads=sum(s.had_model_load for s in ok),
        token_disagreements=sum(s.tokens_disagree for s in ok),
        late_chunks=sum(s.late_chunks for s in ok),
        reconnects=sum(s.reconnects for s in all_samples),
    )


# Locust warns above 90% CPU; a loop lag past 10 ms delays sends and reads by as much (chunk times are kernel stamps).
SATURATED_CPU_PCT = 90.0
SATURATED_LOOP_LAG_MS = 10.0


def generator_saturated(cpu_pct: Sequence[float], loop_lag_ms: Sequence[float]) -> bool:
    """True when a load-generating process, not the server, may have limited a step.

    Over the step's per-second samples (each process's CPU share and largest loop lag in that
    second): ``median(cpu_pct) >= 90`` or ``median(loop_lag_ms) >= 10``, i.e. in at least half of
    its seconds. A lone stall (a noisy neighbour, a garbage collection) does not mark a step.
    """
    if not cpu_pct:
        return False
    return bool(np.median(cpu_pct) >= SATURATED_CPU_PCT or np.median(loop_lag_ms) >= SATURATED_LOOP_LAG_MS)
