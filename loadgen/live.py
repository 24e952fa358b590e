"""Live LLM figures: mergeable per-second summaries of finished requests, and the window arithmetic.

A finished request is spread over the :class:`Summary` of its target and each wall-clock second in
which something of it happened, as a step's stored figures place it (docs/metrics.md, "Per step"):
its output tokens by the second each chunk arrived, its TTFT by its first output, an ITL gap by its
later chunk, and the completion (count, outcome, E2E, TPOT) by its end. Summaries add up: a Locust
worker ships the ones it filled since its last report (counts and histograms, never the requests),
and the master adds them into its own :class:`LiveStore`, which answers for any span of whole seconds.

Latencies go into :class:`LogHistogram`, a fixed-bucket log histogram: a percentile read from it is
within ``RELATIVE_ERROR`` (1 %) of the exact one (numpy's linear interpolation between ranks, as
:func:`stampede.summary.summarize_step` computes it over the stored rows), or within ``ZERO_MS`` of
it for values below that. Per-request figures are the stored record's own (:mod:`stampede.records`).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stampede import metrics, registry
from stampede.metrics import Percentiles
from stampede.records import Outcome, RequestRecord

RELATIVE_ERROR = 0.01
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_INV_LOG_GAMMA = 1 / math.log(_GAMMA)
ZERO_MS = 0.001
"""Values below this (1 µs) share one bucket read as 0: their percentiles are exact to within it."""
MAX_MS = 1e7
"""Values above this (2.8 h) share the top bucket."""
_VECTOR_MIN = 16  # from this many values numpy bins them faster than a loop
_LOW = math.ceil(math.log(ZERO_MS) * _INV_LOG_GAMMA)
_BUCKETS = math.ceil(math.log(MAX_MS) * _INV_LOG_GAMMA) - _LOW + 2  # slot 0 holds the values below ZERO_MS
# Slot j >= 1 holds bucket i = j - 1 + _LOW, the values in (γ^(i-1), γ^i]; it reads as 2γ^i / (γ + 1), within
# RELATIVE_ERROR of every value in it.
_VALUES = np.concatenate([[0.0], 2 * _GAMMA ** np.arange(_LOW, _LOW + _BUCKETS - 1) / (_GAMMA + 1)])


def _slot(value: float) -> int:
    if value < ZERO_MS:
        return 0
    return min(math.ceil(math.log(value) * _INV_LOG_GAMMA) - _LOW + 1, _BUCKETS - 1)


class LogHistogram:
    """Counts of values in fixed buckets ``(γ^(i-1), γ^i]``, ``γ = (1 + 0.01) / (1 - 0.01)``, from 1 µs
    to ``MAX_MS``, plus a zero bucket: one array, so adding a request's gaps and merging are vector sums."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = np.zeros(_BUCKETS, dtype=np.int64)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def add(self, value: float) -> None:
        self.counts[_slot(value)] += 1

    def extend(self, values: Sequence[float]) -> None:
        if len(values) < _VECTOR_MIN:
            for value in values:
                self.counts[_slot(value)] += 1
            return
        arr = np.asarray(values, dtype=float)
        slots = np.ceil(np.log(np.maximum(arr, ZERO_MS)) * _INV_LOG_GAMMA).astype(np.int64) - (_LOW - 1)
        slots = np.where(arr < ZERO_MS, 0, np.minimum(slots, _BUCKETS - 1))
        self.counts += np.bincount(slots, minlength=_BUCKETS)

    def merge(self, other: LogHistogram) -> None:
        self.counts += other.counts

    def percentiles(self) -> Percentiles:
        """p50/p90/p99 as numpy's linear method takes them: between the values of ranks ⌊r⌋ and ⌈r⌉,
        ``r = q (n - 1)``, each read as its bucket's value, so the error stays within RELATIVE_ERROR."""
        slots = np.flatnonzero(self.counts)
        if slots.size == 0:
            return Percentiles(None, None, None)
        ends = np.cumsum(self.counts[slots])
        values = _VALUES[slots]

        def at_rank(rank: int) -> float:
            return float(values[int(np.searchsorted(ends, rank, side="right"))])

        out = []
        for q in metrics.PERCENTILES:
            rank = q / 100 * (int(ends[-1]) - 1)
            low, high = math.floor(rank), math.ceil(rank)
            out.append(at_rank(low) + (rank - low) * (at_rank(high) - at_rank(low)))
        return Percentiles(*out)

    def to_wire(self) -> list[list[int]]:
        """The occupied slots and their counts: a report carries tens of numbers, not the whole array."""
        slots = np.flatnonzero(self.counts)
        return [slots.tolist(), self.counts[slots].tolist()]

    @classmethod
    def from_wire(cls, data: Sequence[Sequence[int]]) -> LogHistogram:
        hist = cls()
        slots = np.asarray(data[0], dtype=np.int64)
        if slots.size and (slots.min() < 0 or slots.max() >= _BUCKETS):
            raise ValueError(f"histogram slots outside 0..{_BUCKETS - 1}")
        np.add.at(hist.counts, slots, np.asarray(data[1], dtype=np.int64))
        return hist


LATENCIES = tuple(registry.get(name) for name in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"))
"""The registry's latencies kept live (response and network-and-queue time are the stored rows' only)."""
_COUNTS = ("requests", "ok", "reconnects", "late_chunks")
_SUMS = ("output_tokens", "ok_tokens", "ok_e2e_ms")


@dataclass
class Summary:
    """What happened in one slice; ``merge`` adds another summary (:meth:`Slices.add` fills it)."""

    requests: int = 0
    """Completions: requests that ended here, any outcome but cancelled."""
    ok: int = 0
    output_tokens: float = 0.0
    """Σ tokens of the chunks that arrived here (any request, any outcome; :func:`metrics.chunk_token_counts`)."""
    ok_tokens: float = 0.0
    ok_e2e_ms: float = 0.0
    """Σ output tokens and Σ E2E of successful completions: their ratio is what one stream received."""
    reconnects: int = 0
    late_chunks: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, LogHistogram] = field(default_factory=lambda: {m.name: LogHistogram() for m in LATENCIES})
    """A histogram per latency of :data:`LATENCIES`, by its registry name."""

    def merge(self, other: Summary) -> None:
        for name in (*_COUNTS, *_SUMS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        for name, hist in self.latencies.items():
            hist.merge(other.latencies[name])

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {name: getattr(self, name) for name in (*_COUNTS, *_SUMS)}
        wire["errors"] = dict(self.errors)
        return wire | {name: hist.to_wire() for name, hist in self.latencies.items()}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Summary:
        summary = cls(
            errors=Counter({str(k): int(v) for k, v in data["errors"].items()}),
            latencies={m.name: LogHistogram.from_wire(data[m.name]) for m in LATENCIES},
        )
        for name in _COUNTS:
            setattr(summary, name, int(data[name]))
        for name in _SUMS:
            setattr(summary, name, float(data[name]))
        return summary


@dataclass(frozen=True)
class Figures:
    """A scope's figures over ``duration_s``; rates divide by it, as a step's divide by ``measured_s``."""

    duration_s: float
    requests: int
    errors: dict[str, int]
    requests_per_s: float
    output_tokens_per_s: float
    output_tokens_per_s_per_request: float | None
    """``Σ output tokens / Σ E2E`` of successful requests: the rate one stream saw, its waits included."""
    ttft_ms: Percentiles
    itl_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    reconnects: int
    late_chunks: int


def figures(summary: Summary, duration_s: float) -> Figures:
    """``requests_per_s = successful completions / duration_s``, ``output_tokens_per_s = tokens that
    arrived / duration_s``; percentiles over successful requests."""
    window = max(duration_s, 1e-9)
    return Figures(
        duration_s=duration_s,
        requests=summary.requests,
        errors=dict(summary.errors),
        requests_per_s=summary.ok / window,
        output_tokens_per_s=summary.output_tokens / window,
        output_tokens_per_s_per_request=summary.ok_tokens / (summary.ok_e2e_ms / 1000)
        if summary.ok_e2e_ms > 0
        else None,
        ttft_ms=summary.latencies["ttft_ms"].percentiles(),
        itl_ms=summary.latencies["itl_ms"].percentiles(),
        tpot_ms=summary.latencies["tpot_ms"].percentiles(),
        e2e_ms=summary.latencies["e2e_ms"].percentiles(),
        reconnects=summary.reconnects,
        late_chunks=summary.late_chunks,
    )


SliceKey = tuple[str, int]
"""(target, wall-clock second)."""


class Slices:
    """Summaries by :data:`SliceKey`: what a worker fills between reports and ships as wire data."""

    def __init__(self) -> None:
        self.by_key: dict[SliceKey, Summary] = {}

    def at(self, key: SliceKey) -> Summary:
        summary = self.by_key.get(key)
        if summary is None:
            summary = self.by_key[key] = Summary()
        return summary

    def add(self, record: RequestRecord) -> None:
        """Place a finished request's parts in the seconds they happened (docs/metrics.md, "Per step")."""
        target, sent_s, offsets = record.target, record.started_at.timestamp(), record.chunk_offsets_ns
        ok = record.outcome is Outcome.OK
        tokens, _ = metrics.output_token_count(record.output_tokens, record.client_output_tokens, len(offsets))
        shares = metrics.chunk_token_counts(len(offsets), tokens, record.chunk_tokens)
        gaps = record.itl_ms if ok else []  # gap i ends with chunk i + 1
        first = 0
        while first < len(offsets):  # chunks arrive in order: a second's chunks are one run of them
            second = math.floor(sent_s + offsets[first] / 1e9)
            end = bisect.bisect_left(offsets, (second + 1 - sent_s) * 1e9, first + 1)
            # The stored figures place a chunk by floor(sent + offset): where rounding moves the bound, it wins.
            while end > first + 1 and math.floor(sent_s + offsets[end - 1] / 1e9) > second:
                end -= 1
            while end < len(offsets) and math.floor(sent_s + offsets[end] / 1e9) == second:
                end += 1
            summary = self.at((target, second))
            summary.output_tokens += sum(shares[first:end])
            if gaps:
                summary.latencies["itl_ms"].extend(gaps[max(first, 1) - 1 : end - 1])
            first = end
        ttft = record.ttft_ms
        # A request that waited for a model load is a load, not a slow TTFT (docs/metrics.md).
        if ok and ttft is not None and float(record.server_timings_ms.get("load_ms") or 0) < metrics.MODEL_LOAD_MIN_MS:
            self.at((target, math.floor(sent_s + offsets[0] / 1e9))).latencies["ttft_ms"].add(ttft)
        if record.outcome is Outcome.CANCELLED:
            return  # stopped with the load: its chunks count, it is no completion
        done = self.at((target, math.floor(sent_s + record.end_offset_ns / 1e9)))
        done.requests += 1
        done.reconnects += record.reconnects
        if not ok:
            done.errors[record.outcome.value] += 1
            return
        done.ok += 1
        done.ok_tokens += tokens
        done.ok_e2e_ms += record.e2e_ms
        done.latencies["e2e_ms"].add(record.e2e_ms)
        if record.tpot_ms is not None:
            done.latencies["tpot_ms"].add(record.tpot_ms)
        done.late_chunks += len(record.late_chunks)

    def drain(self) -> list[list[Any]]:
        """The slices as wire data, emptied: a worker's report carries each request once."""
        wire = [[*key, summary.to_wire()] for key, summary in self.by_key.items()]
        self.by_key = {}
        return wire


Span = tuple[int, int | None]
"""Whole seconds ``[from, to)``; ``to`` None while open."""


class LiveStore:
    """The coordinator's figures: per-second slices for the sliding window, and a total per step.

    Seconds that leave the window are folded into the totals of the steps whose spans hold them, so
    memory stays bounded however long the run.
    """

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self.seconds = Slices()
        self.folded: dict[tuple[str, int], Summary] = {}

    def add(self, record: RequestRecord) -> None:
        self.seconds.add(record)

    def merge_wire(self, wire: Iterable[Sequence[Any]]) -> None:
        for target, second, data in wire:
            self.seconds.at((str(target), int(second))).merge(Summary.from_wire(data))

    def span(self, target: str, from_s: int, to_s: int) -> Summary:
        """Everything of ``target`` that happened in the whole seconds ``[from_s, to_s)`` still held."""
        total = Summary()
        for (t, second), summary in self.seconds.by_key.items():
            if t == target and from_s <= second < to_s:
                total.merge(summary)
        return total

    def window(self, target: str, end_s: int) -> Summary:
        """The sliding window: the whole seconds ``[end_s - window_s, end_s)``."""
        return self.span(target, end_s - self.window_s, end_s)

    def step(self, target: str, index: int, span: Span, end_s: int) -> Summary:
        """Step ``index`` over its span up to ``end_s``: what was folded into it and what is still held."""
        total = self.span(target, span[0], end_s if span[1] is None else min(span[1], end_s))
        folded = self.folded.get((target, index))
        if folded is not None:
            total.merge(folded)
        return total

    def prune(self, end_s: int, spans: dict[int, Span]) -> None:
        """Fold the seconds that have left the window ending at ``end_s`` into their steps' totals."""
        start = end_s - self.window_s
        kept: dict[SliceKey, Summary] = {}
        for (target, second), summary in self.seconds.by_key.items():
            if second >= start:
                kept[(target, second)] = summary
                continue
            for index, (from_s, to_s) in spans.items():
                if from_s <= second and (to_s is None or second < to_s):
                    self.folded.setdefault((target, index), Summary()).merge(summary)
        self.seconds.by_key = kept

    def targets(self) -> list[str]:
        return sorted({target for target, _ in self.seconds.by_key} | {target for target, _ in self.folded})

    def steps(self, target: str) -> list[int]:
        return sorted(index for t, index in self.folded if t == target)

    def clear(self) -> None:
        self.seconds = Slices()
        self.folded = {}
