"""Read a run back from the store and summarise it per target and step (CLI table, dashboard)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from stampede import metrics
from stampede.metrics import PERCENTILES, Percentiles, RequestSample, StepSummary
from stampede.records import Outcome
from stampede.schema import Request, Run, Step

LATENCIES = ("ttft", "itl", "tpot", "e2e")
ROW_COLUMNS = (
    "target",
    "step",
    "users",
    "measured_s",
    "requests",
    "errors",
    "error_rate",
    "requests_per_s",
    "output_tokens_per_s",
    *(f"{name}_p{p}_ms" for name in LATENCIES for p in PERCENTILES),
)


@dataclass(frozen=True)
class TargetStep:
    """A step's summary with the target it ran against."""

    target: str
    index: int
    summary: StepSummary

    def as_row(self) -> dict[str, str | int | float | None]:
        """The step as one flat table row, keyed by :data:`ROW_COLUMNS`."""
        s = self.summary
        row: dict[str, str | int | float | None] = {
            "target": self.target,
            "step": self.index,
            "users": s.users,
            "measured_s": s.measured_s,
            "requests": s.requests,
            "errors": s.errors,
            "error_rate": s.error_rate,
            "requests_per_s": s.requests_per_s,
            "output_tokens_per_s": s.output_tokens_per_s,
        }
        for name in LATENCIES:
            pcts: Percentiles = getattr(s, f"{name}_ms")
            for p in PERCENTILES:
                row[f"{name}_p{p}_ms"] = getattr(pcts, f"p{p}")
        return row


def latest_run_id(session: Session) -> uuid.UUID | None:
    """The most recently started run, if any."""
    return session.scalar(select(Run.id).order_by(Run.started_at.desc()).limit(1))


def _samples(session: Session, run_id: uuid.UUID, target: str, index: int) -> list[RequestSample]:
    rows = session.execute(
        select(
            Request.outcome,
            Request.ttft_ms,
            Request.e2e_ms,
            Request.tpot_ms,
            Request.output_tokens,
            Request.output_chunks,
            Request.chunk_offsets_ns,
        ).where(
            Request.run_id == run_id,
            Request.target == target,
            Request.step_index == index,
            Request.in_warmup.is_(False),
        )
    )
    return [
        RequestSample(
            ok=row.outcome == Outcome.OK.value,
            ttft_ms=row.ttft_ms,
            e2e_ms=row.e2e_ms,
            tpot_ms=row.tpot_ms,
            output_tokens=row.output_tokens if row.output_tokens is not None else row.output_chunks,
            itl_ms=metrics.itl_ms(row.chunk_offsets_ns),
        )
        for row in rows
    ]


def step_summaries(session: Session, run_id: uuid.UUID) -> list[TargetStep]:
    """Summaries of every ended step of a run, ordered by target then step."""
    steps = session.scalars(
        select(Step).where(Step.run_id == run_id, Step.ended_at.is_not(None)).order_by(Step.target, Step.index)
    )
    out = []
    for step in steps:
        assert step.ended_at is not None
        measured_s = max(0.0, (step.ended_at - step.started_at).total_seconds() - step.warmup_s)
        samples = _samples(session, run_id, step.target, step.index)
        out.append(TargetStep(step.target, step.index, metrics.summarize_step(step.users, measured_s, samples)))
    return out
