"""Read a run back from the store and summarise it per target and step (CLI table, regression checks, dashboard).

Summarising a step means reading every request row of it, which is slow for big runs; so a summary is
cached in ``step_stats`` once its step has ended, keyed by the step's row count (rows are only ever
added, so an unchanged count means unchanged rows) and by the SLO it was computed for. Reports read
the cache and recompute only steps whose rows or SLO changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Text, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from stampede import metrics
from stampede.metrics import PERCENTILES, Percentiles, RequestSample, Slo, StepSummary
from stampede.records import Outcome, utc_now
from stampede.schema import LoadgenSample, Request, Run, Step, StepStats

LATENCIES = ("ttft", "itl", "tpot", "e2e", "response", "network_and_queue")
ROW_COLUMNS = (
    "target",
    "step",
    "users",
    "request_rate_per_s",
    "load",
    "measured_s",
    "requests",
    "errors",
    "error_rate",
    "requests_per_s",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "goodput_requests_per_s",
    "model_loads",
    "token_disagreements",
    "late_chunks",
    "reconnects",
    "saturated",
    *(f"{name}_p{p}_ms" for name in LATENCIES for p in PERCENTILES),
)
# Bumped whenever the cached form of a summary changes, so older cache rows are recomputed.
CACHE_VERSION = 3

# The load generator samples its health once a second (loadgen/health.py).
SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SloLimits:
    """A run's SLOs as its sweep file sets them: p99 latency limits and the largest error share."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    max_error_rate: float | None = None

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> SloLimits:
        """The limits in a run's config (``config["sweep"]["slo"]``); none set when it has none."""
        slo = (config.get("sweep") or {}).get("slo") or {}
        return cls(**{name: slo.get(name) for name in ("ttft_ms", "tpot_ms", "e2e_ms", "max_error_rate")})

    @property
    def any_set(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def request_slo(self) -> Slo | None:
        """The per-request SLO behind goodput; None when no latency limit is set."""
        if self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None:
            return None
        return Slo(self.ttft_ms, self.tpot_ms, self.e2e_ms)

    def met_by(self, s: StepSummary) -> bool:
        """A step meets the SLOs when each set p99 limit and the error-rate limit hold (unset limits pass)."""
        checks = ((self.ttft_ms, s.ttft_ms.p99), (self.tpot_ms, s.tpot_ms.p99), (self.e2e_ms, s.e2e_ms.p99))
        latencies_ok = all(limit is None or (value is not None and value <= limit) for limit, value in checks)
        errors_ok = self.max_error_rate is None or s.error_rate <= self.max_error_rate
        return s.requests > 0 and latencies_ok and errors_ok


@dataclass(frozen=True)
class TargetStep:
    """A step's summary with the target it ran against, its open-loop rate and whether the generator saturated."""

    target: str
    index: int
    summary: StepSummary
    saturated: bool = False
    request_rate_per_s: float | None = None

    @property
    def load(self) -> float:
        """The step's load: its request rate in open loop, else its concurrent users."""
        return self.request_rate_per_s if self.request_rate_per_s is not None else float(self.summary.users)

    def as_row(self) -> dict[str, str | int | float | bool | None]:
        """The step as one flat table row, keyed by :data:`ROW_COLUMNS`."""
        s = self.summary
        row: dict[str, str | int | float | bool | None] = {
            "target": self.target,
            "step": self.index,
            "users": s.users,
            "request_rate_per_s": self.request_rate_per_s,
            "load": self.load,
            "measured_s": s.measured_s,
            "requests": s.requests,
            "errors": s.errors,
            "error_rate": s.error_rate,
            "requests_per_s": s.requests_per_s,
            "output_tokens_per_s": s.output_tokens_per_s,
            "total_tokens_per_s": s.total_tokens_per_s,
            "goodput_requests_per_s": s.goodput_requests_per_s,
            "model_loads": s.model_loads,
            "token_disagreements": s.token_disagreements,
            "late_chunks": s.late_chunks,
            "reconnects": s.reconnects,
            "saturated": self.saturated,
        }
        for name in LATENCIES:
            pcts: Percentiles = getattr(s, f"{name}_ms")
            for p in PERCENTILES:
                row[f"{name}_p{p}_ms"] = getattr(pcts, f"p{p}")
        return row


def knees(steps: Sequence[TargetStep], limits: SloLimits) -> dict[str, TargetStep | None]:
    """Per target, the step of highest load that meets ``limits`` (None when none does)."""
    out: dict[str, TargetStep | None] = {}
    for step in steps:
        best = out.setdefault(step.target, None)
        if limits.met_by(step.summary) and (best is None or step.load > best.load):
            out[step.target] = step
    return out


def latest_run_id(session: Session) -> uuid.UUID | None:
    """The most recently started run, if any."""
    return session.scalar(select(Run.id).order_by(Run.started_at.desc()).limit(1))


def _json(text: str | None, empty: Any) -> Any:
    return empty if text is None else orjson.loads(text)


def _samples(session: Session, run_id: uuid.UUID, target: str, index: int) -> list[RequestSample]:
    # JSON columns are read as text and parsed with orjson: several times faster than the driver's json.
    rows = session.execute(
        select(
            Request.outcome,
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
            Request.step_index == index,
            Request.in_warmup.is_(False),
        )
    )
    samples = []
    for row in rows:
        server = _json(row.server, {})
        tokens, _ = metrics.output_token_count(row.output_tokens, row.client_output_tokens, row.output_chunks)
        samples.append(
            RequestSample(
                ok=row.outcome == Outcome.OK.value,
                ttft_ms=row.ttft_ms,
                e2e_ms=row.e2e_ms,
                tpot_ms=row.tpot_ms,
                output_tokens=tokens,
                itl_ms=metrics.itl_ms(_json(row.offsets, []), _json(row.chunk_tokens, [])),
                prompt_tokens=row.prompt_tokens or 0,
                response_ms=row.response_ms,
                model_load_ms=float(server.get("load_ms") or 0.0),
                network_and_queue_ms=metrics.network_and_queue_ms(row.e2e_ms, server.get("total_ms")),
                tokens_disagree=bool(row.tokens_disagree),
                late_chunks=len(_json(row.late, [])),
                reconnects=row.reconnects,
            )
        )
    return samples


def _summary_from_json(data: dict[str, Any]) -> StepSummary:
    fields: dict[str, Any] = {k: Percentiles(**v) if isinstance(v, dict) else v for k, v in data.items()}
    return StepSummary(**fields)


def _cache_key(slo: Slo | None, measured_s: float) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "slo": None if slo is None else asdict(slo), "measured_s": measured_s}


def _store_cache(
    session: Session, run_id: uuid.UUID, step: Step, rows: int, key: dict[str, Any], s: StepSummary
) -> None:
    values = {
        "run_id": run_id,
        "target": step.target,
        "step_index": step.index,
        "request_rows": rows,
        "computed_at": utc_now(),
        "summary": key | {"summary": asdict(s)},
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(StepStats).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "target", "step_index"],
        set_={c: stmt.excluded[c] for c in ("request_rows", "computed_at", "summary")},
    )
    session.execute(stmt)


def _saturated(step: Step, samples: list[tuple[datetime, float, float]]) -> bool:
    """The saturation verdict over the samples of the step's measured window.

    A sample covers the second before it was taken, so the window's samples are those taken from one
    second after the warm-up to the step's end: start-up and shutdown stalls do not count.
    """
    assert step.ended_at is not None
    first = step.started_at + timedelta(seconds=step.warmup_s + SAMPLE_INTERVAL_S)
    inside = [(cpu, lag) for at, cpu, lag in samples if first <= at <= step.ended_at]
    return metrics.generator_saturated([cpu for cpu, _ in inside], [lag for _, lag in inside])


def step_summaries(session: Session, run_id: uuid.UUID) -> list[TargetStep]:
    """Summaries of every ended step of a run, ordered by target then step.

    Goodput uses the run's SLO (``config["sweep"]["slo"]``); ``saturated`` is
    :func:`stampede.metrics.generator_saturated` over the step's load-generator samples. Summaries are
    read from, and written to, the ``step_stats`` cache in the caller's transaction.
    """
    config = session.scalar(select(Run.config).where(Run.id == run_id)) or {}
    slo = SloLimits.of_config(config).request_slo()
    steps = list(
        session.scalars(
            select(Step).where(Step.run_id == run_id, Step.ended_at.is_not(None)).order_by(Step.target, Step.index)
        )
    )
    counts = {
        (t, i): n
        for t, i, n in session.execute(
            select(Request.target, Request.step_index, func.count())
            .where(Request.run_id == run_id)
            .group_by(Request.target, Request.step_index)
        )
    }
    # Columns, not entities: the session's identity map would hand back rows as it first loaded them.
    cached = {
        (t, i): (n, summary)
        for t, i, n, summary in session.execute(
            select(StepStats.target, StepStats.step_index, StepStats.request_rows, StepStats.summary).where(
                StepStats.run_id == run_id
            )
        )
    }
    health: dict[tuple[str, int], list[tuple[datetime, float, float]]] = {}
    for t, i, at, cpu, lag in session.execute(
        select(
            LoadgenSample.target,
            LoadgenSample.step_index,
            LoadgenSample.sampled_at,
            LoadgenSample.cpu_pct,
            LoadgenSample.loop_lag_ms,
        ).where(LoadgenSample.run_id == run_id)
    ):
        health.setdefault((t, i), []).append((at, cpu, lag))
    out = []
    for step in steps:
        assert step.ended_at is not None
        measured_s = max(0.0, (step.ended_at - step.started_at).total_seconds() - step.warmup_s)
        rows = counts.get((step.target, step.index), 0)
        key = _cache_key(slo, measured_s)
        hit_rows, hit = cached.get((step.target, step.index), (None, {}))
        if hit_rows == rows and {k: hit.get(k) for k in key} == key:
            summary = _summary_from_json(hit["summary"])
        else:
            samples = _samples(session, run_id, step.target, step.index)
            summary = metrics.summarize_step(step.users, measured_s, samples, slo)
            if measured_s > 0:  # a zero-length window gives NaN rates, which JSON cannot hold
                _store_cache(session, run_id, step, rows, key, summary)
        saturated = _saturated(step, health.get((step.target, step.index), []))
        out.append(TargetStep(step.target, step.index, summary, saturated, step.request_rate_per_s))
    return out
