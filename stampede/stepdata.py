"""What a step's summary is computed from, read from the store: every request that overlapped its
measured window, the window itself, and the runtime's own output-token counter over it.

A step's figures are by arrival time (docs/metrics.md), so they read requests sent in earlier steps
too: any request sent before the window closed and ended after it opened.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from stampede import metrics, windows
from stampede.metrics import RequestSample
from stampede.records import Outcome
from stampede.schema import Request, RuntimeSample, Step
from stampede.windows import ServerCount, Window

_T = TypeVar("_T")

SERVER_TOKEN_COUNTERS = ("vllm:generation_tokens_total", "llamacpp:tokens_predicted_total")
"""Runtimes' own counts of output tokens generated, as their /metrics name them."""


def epoch_s(at: datetime) -> float:
    """Seconds since the epoch of a stored UTC time (SQLite hands it back without its zone)."""
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _json(text: str | None, empty: _T) -> _T:
    """A JSON column's value, of the type its column holds (``empty``'s), or ``empty`` for NULL."""
    if text is None:
        return empty
    value: _T = orjson.loads(text)
    return value


def overlapping_samples(
    session: Session, run_id: uuid.UUID, target: str, from_at: datetime, to_at: datetime
) -> list[RequestSample]:
    """Every request of ``target`` in flight at some time in ``[from_at, to_at)``, whatever step sent it."""
    longest_ms = session.scalar(
        select(func.max(Request.e2e_ms)).where(Request.run_id == run_id, Request.target == target)
    )
    if longest_ms is None:
        return []
    earliest = from_at - timedelta(milliseconds=longest_ms + 1)
    # JSON columns are read as text and parsed with orjson: several times faster than the driver's json.
    rows = session.execute(
        select(
            Request.outcome,
            Request.started_at,
            Request.ttft_ms,
            Request.e2e_ms,
            Request.tpot_ms,
            Request.prompt_tokens,
            Request.output_tokens,
            Request.client_output_tokens,
            Request.output_chunks,
            cast(Request.chunk_offsets_ns, Text).label("offsets"),
            cast(Request.chunk_tokens, Text).label("chunk_tokens"),
            cast(Request.server_timings_ms, Text).label("server"),
            Request.response_ms,
            Request.tokens_disagree,
            cast(Request.late_chunks, Text).label("late"),
            Request.reconnects,
        ).where(
            Request.run_id == run_id,
            Request.target == target,
            Request.started_at >= earliest,
            Request.started_at < to_at,
        )
    )
    samples = []
    for row in rows:
        server: dict[str, Any] = _json(row.server, {})
        offsets: list[int] = _json(row.offsets, [])
        per_chunk: list[int] = _json(row.chunk_tokens, [])
        tokens, _ = metrics.output_token_count(row.output_tokens, row.client_output_tokens, row.output_chunks)
        samples.append(
            RequestSample(
                ok=row.outcome == Outcome.OK.value,
                ttft_ms=row.ttft_ms,
                e2e_ms=row.e2e_ms,
                tpot_ms=row.tpot_ms,
                output_tokens=tokens,
                itl_ms=metrics.itl_ms(offsets, per_chunk),
                prompt_tokens=row.prompt_tokens or 0,
                response_ms=row.response_ms,
                model_load_ms=float(server.get("load_ms") or 0.0),
                network_and_queue_ms=metrics.network_and_queue_ms(row.e2e_ms, server.get("total_ms")),
                tokens_disagree=bool(row.tokens_disagree),
                late_chunks=len(_json(row.late, [])),
                reconnects=row.reconnects,
                sent_s=epoch_s(row.started_at),
                chunk_offsets_ns=offsets,
                chunk_tokens=metrics.chunk_token_counts(len(offsets), tokens, per_chunk),
                cancelled=row.outcome == Outcome.CANCELLED.value,
            )
        )
    return samples


def open_window(step: Step, samples: list[RequestSample]) -> None:
    """Set the ended ``step``'s ``window_opened_at`` and ``load_reached`` from the requests that
    overlapped it (:func:`overlapping_samples` over the whole step).

    The window opens ``warmup_s`` after the load holds steady (:func:`stampede.windows.window_opens_s`:
    the step's users all in flight and one producing output; in open loop, the requests in flight all
    sent at the step's rate), or, when it never does, ``warmup_s`` after the step's start.
    """
    assert step.ended_at is not None
    started_s, ended_s = epoch_s(step.started_at), epoch_s(step.ended_at)
    planned = None if step.request_rate_per_s is not None else step.users
    steady_s = windows.window_opens_s(samples, planned, started_s, ended_s)
    step.load_reached = steady_s is not None
    step.window_opened_at = _at(min((steady_s if steady_s is not None else started_s) + step.warmup_s, ended_s))


def step_window(step: Step) -> Window:
    """The ended step's measured window (its start plus ``warmup_s`` until its window is set)."""
    assert step.ended_at is not None
    opened = step.window_opened_at or step.started_at + timedelta(seconds=step.warmup_s)
    return Window(epoch_s(opened), epoch_s(step.ended_at))


def server_count(session: Session, run_id: uuid.UUID, target: str, window: Window) -> ServerCount | None:
    """The runtime's output-token counter over the scrapes inside ``window``: from the first to the last,
    summed over its series; None without two scrapes there."""
    rows = session.execute(
        select(RuntimeSample.metric, cast(RuntimeSample.labels, Text), RuntimeSample.sampled_at, RuntimeSample.value)
        .where(
            RuntimeSample.run_id == run_id,
            RuntimeSample.target == target,
            RuntimeSample.metric.in_(SERVER_TOKEN_COUNTERS),
            RuntimeSample.sampled_at >= _at(window.opened_s),
            RuntimeSample.sampled_at < _at(window.closed_s),
        )
        .order_by(RuntimeSample.sampled_at)
    )
    series: dict[tuple[str, str], list[float]] = {}
    times: list[float] = []
    for metric, labels, at, value in rows:
        series.setdefault((metric, labels), []).append(value)
        times.append(epoch_s(at))
    if len(set(times)) < 2:
        return None
    return ServerCount(min(times), max(times), sum(windows.counter_increase(v) for v in series.values()))
