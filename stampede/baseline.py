"""Baselines: each sweep's accepted runs, and the regression check of a new run against them.

A run's baseline, per target, is the last accepted run of the same sweep (by name) that loaded that
target. The first run of a sweep has none and becomes its baseline; later ones are accepted by a
person (``stampede accept RUN``) once their figures are understood.
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from stampede.plan import RunConfig
from stampede.regression import Finding, compare
from stampede.report import step_summaries
from stampede.schema import Run, Step
from stampede.sweepfile import RegressionSpec

BASELINE_CANDIDATES = 200


def sweep_name(run: Run) -> str:
    """The name of the sweep behind a run (its sweep file's, else the run's)."""
    sweep = RunConfig.stored_sweep(run.config)
    return sweep.name if sweep is not None else run.name


def find_baseline(session: Session, run: Run, target: str) -> Run | None:
    """The last accepted run of the same sweep, before ``run``, that loaded ``target``."""
    has_target = exists().where(Step.run_id == Run.id, Step.target == target)
    candidates = session.scalars(
        select(Run)
        .where(Run.accepted.is_(True), Run.id != run.id, Run.started_at < run.started_at, has_target)
        .order_by(Run.started_at.desc())
        .limit(BASELINE_CANDIDATES)
    )
    name = sweep_name(run)
    return next((c for c in candidates if sweep_name(c) == name), None)


class IncompleteRun(ValueError):
    """A run whose store lacks requests its load generators made: its figures are not yet its own."""


def check_run(session: Session, run_id: uuid.UUID, spec: RegressionSpec) -> list[Finding]:
    """Compare a finished run with its baselines and record the verdict on the run row."""
    run = session.get(Run, run_id)
    if run is None:
        raise ValueError(f"no run {run_id}")
    current = step_summaries(session, run_id)
    if any(step.incomplete for step in current):
        raise IncompleteRun(
            f"run {run_id} is incomplete (" + ", ".join(f"{s.target} step {s.index}: {s.stored} of {s.produced}"
            for s in current if s.incomplete) + " requests stored): not compared with its baseline; store the"
            " rest (`stampede replay`, `stampede replay --failed`) and check again"
        )  # fmt: skip
    findings: list[Finding] = []
    baseline_ids = []
    for target in sorted({s.target for s in current}):
        baseline = find_baseline(session, run, target)
        if baseline is None:
            continue
        baseline_ids.append(baseline.id)
        old = [s for s in step_summaries(session, baseline.id) if s.target == target]
        findings += compare(old, [s for s in current if s.target == target], spec)
    if not baseline_ids:
        run.accepted = True  # the first run of a sweep is what later ones are held to
    run.baseline_run_id = baseline_ids[0] if baseline_ids else None
    run.regression = bool(findings)
    run.findings = [f.to_json() for f in findings]
    return findings


def accept_run(session: Session, run_id: uuid.UUID) -> None:
    """Make a run the baseline of its sweep from now on."""
    run = session.get(Run, run_id)
    if run is None:
        raise ValueError(f"no run {run_id}")
    run.accepted = True
