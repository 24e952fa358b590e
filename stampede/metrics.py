"""Per-request metric math: raw request timings in, figures out. No I/O, no framework imports.

Every function states its formula; every name carries its unit. Latency percentiles are taken over
successful requests only (errors are counted, not timed), with linear interpolation between ranks.
A step's figures over its measured window are :mod:`stampede.summary`'s; each metric's name, unit,
formula and direction are declared once in :mod:`stampede.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

NS_PER_MS = 1_000_000
PERCENTILES = (50, 90, 99)
# Completions a step's window needs to be trusted, unless the sweep says otherwise.
MIN_COMPLETIONS = 30


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
    """The per-request figures a step summary needs, whatever they were loaded from.

    ``sent_s`` (wall clock, s since the epoch) places the request in time; ``chunk_offsets_ns`` and
    ``e2e_ms`` then give when each chunk arrived and when the request ended, on the client's monotonic
    clock from the send. ``chunk_tokens`` holds the tokens each chunk carried (:func:`chunk_token_counts`).
    """

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
    sent_s: float = 0.0
    chunk_offsets_ns: Sequence[int] = field(default_factory=tuple)
    chunk_tokens: Sequence[float] = field(default_factory=tuple)
    cancelled: bool = False
    """Still running when the load stopped: its chunks count, it is no completion."""

    @property
    def had_model_load(self) -> bool:
        return self.model_load_ms >= MODEL_LOAD_MIN_MS

    @property
    def ended_s(self) -> float:
        """Wall-clock end: ``sent_s + E2E``."""
        return self.sent_s + self.e2e_ms / 1000

    def chunk_times_s(self) -> list[float]:
        """Wall-clock arrival of each output chunk: ``sent_s + offset``."""
        return [self.sent_s + offset / 1e9 for offset in self.chunk_offsets_ns]


def chunk_token_counts(chunks: int, output_tokens: int, tokenizer_counts: Sequence[int] = ()) -> list[float]:
    """Tokens each output chunk carried, to place a request's tokens in time; they sum to its count.

    ``output_tokens`` is the request's count (:func:`output_token_count`: the server's, else the client
    tokenizer's, else chunks seen). With the client tokenizer's per-chunk counts, it is shared in their
    proportions; else spread evenly, ``output_tokens / chunks`` each (a runtime that sends several
    tokens in a chunk sends them as it decodes them, so each chunk stands for an equal share).
    """
    if not chunks:
        return []
    if len(tokenizer_counts) == chunks and sum(tokenizer_counts) > 0:
        scale = output_tokens / sum(tokenizer_counts)
        return [n * scale for n in tokenizer_counts]
    return [output_tokens / chunks] * chunks


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
