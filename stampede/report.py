"""Read a run back from the store and summarise it per target and step (CLI table, regression checks, dashboard).

Summarising a step means reading every request row that overlapped its window, which is slow for big
runs; so a summary is cached in ``step_stats`` once its step has ended, keyed by its target's row count
(a request of any step may reach into its window; rows are only ever added, so an unchanged count
means unchanged rows), its count of runtime token-counter scrapes, its window, and the SLO and minimum
of completions it was computed for. Reports read the cache and recompute only steps where one changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stampede import metrics, registry, stepdata
from stampede.metrics import Percentiles
from stampede.records import utc_now
from stampede.schema import LoadgenCount, LoadgenSample, Request, Run, RuntimeSample, Step, StepStats
from stampede.slo import Slo
from stampede.store import dialect_insert
from stampede.summary import StepSummary, summarize_step
from stampede.windows import Window

# A step's row: where the step ran, its figures (:data:`stampede.registry.STEP_FIGURES`), the checks of
# those figures, then each latency's percentiles (:data:`stampede.registry.LATENCIES`).
PLACE_COLUMNS = ("target", "step", "users", "request_rate_per_s", "load", "measured_s")
CHECK_COLUMNS = (
    "little_mismatch", "load_reached", "too_short", "lengthen_to_s", "saturated", "lost_workers", "users_left",
    "stored_requests", "produced_requests",
)  # fmt: skip
_STEP_FIGURES = [m.name for m in registry.STEP_FIGURES]
ROW_COLUMNS = (*PLACE_COLUMNS, *_STEP_FIGURES, *CHECK_COLUMNS, *(c for m in registry.LATENCIES for c in m.columns()))
# Bumped whenever the cached form of a summary changes, so older cache rows are recomputed.
CACHE_VERSION = 4

# The load generator samples its health once a second (loadgen/health.py).
SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class TargetStep:
    """A step's summary with the target it ran against, its open-loop rate and whether the generator saturated."""

    target: str
    index: int
    summary: StepSummary
    saturated: bool = False
    request_rate_per_s: float | None = None
    lost_workers: int = 0
    """Locust workers that stopped reporting during the step (master/worker mode)."""
    lost_after_s: float | None = None
    """Seconds from the step's start to the first loss."""
    users_left: int | None = None
    """Users the workers still reporting ran after the last loss."""
    stored: int = 0
    """Request rows stored of those sent in this step."""
    produced: int | None = None
    """Request records the load generators made for this step, as they counted them; None where no count
    reached the store (a run of an older version)."""

    @property
    def incomplete(self) -> bool:
        """The store holds fewer of the step's requests than its load generators made."""
        return self.produced is not None and self.stored < self.produced

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
        }
        row |= {name: getattr(s, name) for name in _STEP_FIGURES}
        row |= {
            "little_mismatch": s.little_mismatch,
            "load_reached": s.load_reached,
            "too_short": s.too_short,
            "lengthen_to_s": s.lengthen_to_s if s.too_short else None,
            "saturated": self.saturated,
            "lost_workers": self.lost_workers,
            "users_left": self.users_left,
            "stored_requests": self.stored,
            "produced_requests": self.produced,
        }
        for metric in registry.LATENCIES:
            pcts: Percentiles = getattr(s, metric.name)
            for p in metric.percentiles:
                row[metric.column(p)] = getattr(pcts, f"p{p}")
        return row


def knees(steps: Sequence[TargetStep], limits: Slo) -> dict[str, TargetStep | None]:
    """Per target, the step of highest load that meets ``limits`` (None when none does)."""
    out: dict[str, TargetStep | None] = {}
    for step in steps:
        best = out.setdefault(step.target, None)
        if limits.met_by_step(step.summary) and (best is None or step.load > best.load):
            out[step.target] = step
    return out


def latest_run_id(session: Session) -> uuid.UUID | None:
    """The most recently started run, if any."""
    return session.scalar(select(Run.id).order_by(Run.started_at.desc()).limit(1))


def _summary_from_json(data: dict[str, Any]) -> StepSummary:
    fields: dict[str, Any] = {k: Percentiles(**v) if isinstance(v, dict) else v for k, v in data.items()}
    return StepSummary(**fields)


def _cache_key(slo: Slo | None, window: Window, min_completions: int, scrapes: int) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "slo": None if slo is None else slo.latency_limits(),
        "window": [window.opened_s, window.closed_s],
        "min_completions": min_completions,
        "scrapes": scrapes,
    }


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
    stmt = dialect_insert(session, StepStats).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "target", "step_index"],
        set_={c: stmt.excluded[c] for c in ("request_rows", "computed_at", "summary")},
    )
    session.execute(stmt)


def _saturated(window: Window, samples: list[tuple[datetime, float, float]]) -> bool:
    """The saturation verdict over the samples of the step's measured window.

    A sample covers the second before it was taken, so the window's samples are those taken from one
    second after it opened to its end: start-up and shutdown stalls do not count.
    """
    first = window.opened_s + SAMPLE_INTERVAL_S
    inside = [(cpu, lag) for at, cpu, lag in samples if first <= stepdata.epoch_s(at) <= window.closed_s]
    return metrics.generator_saturated([cpu for cpu, _ in inside], [lag for _, lag in inside])


def completeness(session: Session, run_id: uuid.UUID) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Per (target, step sent in): request rows stored, and request records the load generators made
    (their counts, sent through the same sinks after the records they count)."""
    stored = {
        (t, i): n
        for t, i, n in session.execute(
            select(Request.target, Request.step_index, func.count())
            .where(Request.run_id == run_id)
            .group_by(Request.target, Request.step_index)
        )
    }
    produced = {
        (t, i): int(n)
        for t, i, n in session.execute(
            select(LoadgenCount.target, LoadgenCount.step_index, func.sum(LoadgenCount.requests))
            .where(LoadgenCount.run_id == run_id)
            .group_by(LoadgenCount.target, LoadgenCount.step_index)
        )
    }
    return stored, produced


def incomplete_steps(session: Session, run_id: uuid.UUID) -> list[tuple[str, int, int, int]]:
    """``(target, step, stored, produced)`` of each step whose requests the store does not all hold yet."""
    stored, produced = completeness(session, run_id)
    return [(t, i, stored.get((t, i), 0), n) for (t, i), n in sorted(produced.items()) if stored.get((t, i), 0) < n]


def step_summaries(session: Session, run_id: uuid.UUID) -> list[TargetStep]:
    """Summaries of every ended step of a run, ordered by target then step.

    A step is summarised over its measured window (:mod:`stampede.stepdata`), set and stored by its
    first summary, from every request that overlapped it. Goodput uses the run's SLO
    (``config["sweep"]["slo"]``), the too-short check its ``min_completions``; ``saturated`` is
    :func:`stampede.metrics.generator_saturated` over the step's load-generator samples. Summaries are
    read from, and written to, the ``step_stats`` cache in the caller's transaction.
    """
    config = session.scalar(select(Run.config).where(Run.id == run_id)) or {}
    slo = Slo.of_config(config).request_slo()
    steps = list(
        session.scalars(
            select(Step).where(Step.run_id == run_id, Step.ended_at.is_not(None)).order_by(Step.target, Step.index)
        )
    )
    min_completions = int(config.get("min_completions") or metrics.MIN_COMPLETIONS)
    # A step's figures read requests of any step that overlapped its window: any new row may change them.
    counts: dict[str, int] = dict(
        session.execute(
            select(Request.target, func.count()).where(Request.run_id == run_id).group_by(Request.target)
        ).all()
    )
    scrapes: dict[str, int] = dict(
        session.execute(
            select(RuntimeSample.target, func.count())
            .where(RuntimeSample.run_id == run_id, RuntimeSample.metric.in_(stepdata.SERVER_TOKEN_COUNTERS))
            .group_by(RuntimeSample.target)
        ).all()
    )
    # Columns, not entities: the session's identity map would hand back rows as it first loaded them.
    cached = {
        (t, i): (n, summary)
        for t, i, n, summary in session.execute(
            select(StepStats.target, StepStats.step_index, StepStats.request_rows, StepStats.summary).where(
                StepStats.run_id == run_id
            )
        )
    }
    stored, produced = completeness(session, run_id)
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
        samples = None
        if step.window_opened_at is None:  # once: later reports use the same window
            samples = stepdata.overlapping_samples(session, run_id, step.target, step.started_at, step.ended_at)
            stepdata.open_window(step, samples)
        window = stepdata.step_window(step)
        rows = counts.get(step.target, 0)
        key = _cache_key(slo, window, min_completions, scrapes.get(step.target, 0))
        hit_rows, hit = cached.get((step.target, step.index), (None, {}))
        if hit_rows == rows and {k: hit.get(k) for k in key} == key:
            summary = _summary_from_json(hit["summary"])
        else:
            if samples is None:
                samples = stepdata.overlapping_samples(session, run_id, step.target, step.started_at, step.ended_at)
            server = stepdata.server_count(session, run_id, step.target, window)
            summary = summarize_step(step.users, window, samples, slo, min_completions, server)
            summary = replace(
                summary,
                opened_after_s=window.opened_s - stepdata.epoch_s(step.started_at),
                load_reached=bool(step.load_reached),
            )
            if window.length_s > 0:  # a zero-length window gives NaN rates, which JSON cannot hold
                _store_cache(session, run_id, step, rows, key, summary)
        saturated = _saturated(window, health.get((step.target, step.index), []))
        lost_after_s = None if step.lost_at is None else (step.lost_at - step.started_at).total_seconds()
        out.append(
            TargetStep(
                step.target,
                step.index,
                summary,
                saturated,
                step.request_rate_per_s,
                step.lost_workers,
                lost_after_s,
                step.users_left,
                stored.get((step.target, step.index), 0),
                produced.get((step.target, step.index)),
            )
        )
    return out
