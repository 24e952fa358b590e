"""Scheduled sweeps, kept in the results database so every host sees the same list."""

from __future__ import annotations

from collections.abc import Sequence

from croniter import croniter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stampede.records import utc_now
from stampede.schema import Schedule
from stampede.sweepfile import SweepFile


def add_schedule(session: Session, name: str, cron: str, spec: SweepFile) -> None:
    """Register (or replace) the sweep ``name`` to run on ``cron``; ValueError for a bad expression."""
    if not croniter.is_valid(cron):
        raise ValueError(f"not a cron expression: {cron!r} (five fields, e.g. '0 3 * * *')")
    session.merge(Schedule(name=name, cron=cron, sweep=spec.model_dump(mode="json"), created_at=utc_now()))


def list_schedules(session: Session) -> Sequence[Schedule]:
    """Every scheduled sweep, by name."""
    return session.scalars(select(Schedule).order_by(Schedule.name)).all()


def remove_schedule(session: Session, name: str) -> bool:
    """Forget the sweep ``name``; False when there was none."""
    return bool(session.execute(delete(Schedule).where(Schedule.name == name)).rowcount)  # type: ignore[attr-defined]  # a DELETE's result is a CursorResult
