"""A sweep: each target of a plan in turn through its steps, its results read back and summarised.

:func:`run_sweep` checks everything it can before any load (targets reachable, prompt file, stores),
runs Locust per target (:mod:`stampede.locust_launch`), waits for the records to be stored and
summarises them; :func:`check_baseline` compares the run with its baseline. They return what the
caller prints; progress goes to a :class:`SweepOutput` as it happens.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from stampede import baseline, db, report, store
from stampede.locust_launch import SweepError, kept_records, run_target
from stampede.plan import SweepPlan
from stampede.preflight import StoreUnavailable, check_stores
from stampede.records import Api, Outcome
from stampede.regression import Finding
from stampede.report import TargetStep
from stampede.schema import Request, Step
from stampede.settings import get_settings, redact_url
from stampede.sweepfile import TargetSpec

REGRESSION_EXIT = 3
"""Exit status of ``stampede sweep --check`` when the run regressed against its baseline."""
PROBE_PATHS = {Api.OLLAMA_CHAT: "/api/tags", Api.OPENAI_CHAT: "/v1/models"}
PROBE_TIMEOUT_S = 3.0
# In a fleet, records reach the database through RQ workers: give them this long to catch up.
STORE_WAIT_S = 120.0
LOG_DIR = Path(".stampede/logs")


def check_reachable(target: TargetSpec, api_key: str | None = None) -> None:
    """Raise SweepError in one line if the target does not answer HTTP or refuses ``api_key``.

    The probe carries the key as the load will (``Authorization: Bearer``), so a target that needs
    one is judged with it.
    """
    url = target.url.rstrip("/") + PROBE_PATHS[target.api]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            hint = "the key in STAMPEDE_API_KEY" if api_key else "no key: set STAMPEDE_API_KEY"
            raise SweepError(f"target {target.name} ({target.url}) refused access: HTTP {exc.code} ({hint})") from None
        return  # it answers HTTP; the load itself will show what else is wrong
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SweepError(f"cannot reach target {target.name} at {target.url}: {reason}") from None


@dataclass(frozen=True)
class Progress:
    """Where a target's sweep stands, as stored so far."""

    step_index: int | None
    requests: int
    errors: int


def read_progress(session: Session, run_id: uuid.UUID, target: str) -> Progress:
    """The current step and the stored request counts of one target of a run."""
    step = session.scalar(select(func.max(Step.index)).where(Step.run_id == run_id, Step.target == target))
    counts = session.execute(
        select(func.count(), func.count().filter(Request.outcome != Outcome.OK.value)).where(
            Request.run_id == run_id, Request.target == target
        )
    ).one()
    return Progress(step, counts[0], counts[1])


def common_errors(session: Session, run_id: uuid.UUID, target: str, limit: int = 3) -> list[tuple[str, int]]:
    """The most frequent error messages of a target's failed requests, with their counts."""
    count = func.count().label("n")
    rows = session.execute(
        select(func.coalesce(Request.error, Request.outcome), count)
        .where(Request.run_id == run_id, Request.target == target, Request.outcome != Outcome.OK.value)
        .group_by(func.coalesce(Request.error, Request.outcome))
        .order_by(count.desc())
        .limit(limit)
    ).all()
    return [(str(message), int(n)) for message, n in rows]


def wait_until_stored(
    session_factory: Callable[[], Session], run_id: uuid.UUID, target: str, expected: int, timeout_s: float
) -> int:
    """Wait until ``expected`` request rows of a target are stored (RQ workers may lag); returns the count."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_factory() as session:
            stored = read_progress(session, run_id, target).requests
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


class SweepOutput(Protocol):
    """Where a sweep says how it goes while it runs."""

    def progress(self, step: str, line: str) -> None:
        """A target's progress: ``line`` in full, ``step`` the part that changes once per step."""

    def target_done(self) -> None:
        """The target's last progress line was shown."""

    def note(self, line: str) -> None:
        """A line to show as it is (warnings, hints, errors of requests)."""


@dataclass
class SweepResult:
    """What a sweep measured, and which of its targets lack records or failed whole."""

    summaries: list[TargetStep]
    unstored_targets: list[str] = field(default_factory=list)
    failed_targets: list[str] = field(default_factory=list)

    def problem(self, run_id: uuid.UUID) -> str | None:
        """Why the sweep failed, said for the user, or None."""
        if self.unstored_targets:
            return (
                f"records of {', '.join(sorted(set(self.unstored_targets)))} were not stored, so the table above lacks "
                f"them: deliver them with the `stampede replay` command above, then `stampede report {run_id}`"
            )
        if self.failed_targets:
            return f"every request to {', '.join(self.failed_targets)} failed: nothing was measured (see above)"
        return None


def _database_url() -> str:
    return get_settings().database_url.get_secret_value()


def _preflight(plan: SweepPlan) -> None:
    """Refuse, in one line, a sweep whose prompt file, targets or stores are not there, before any load."""
    prompt_file = plan.spec.prompt_file
    if prompt_file is not None and not prompt_file.is_file():
        raise SweepError(f"prompt file {prompt_file} not found (--prompt-set {plan.spec.prompt_set})")
    api_key = get_settings().api_key
    for target in plan.spec.targets:  # all of them before any load, so a typo fails in seconds
        check_reachable(target, api_key.get_secret_value() if api_key is not None else None)
    try:
        # The sweep reads its results back, so the database is checked in a fleet too (a SQLite file
        # is created or upgraded; a PostgreSQL one behind is refused, naming `stampede db upgrade`).
        check_stores(get_settings(), database=True)
    except StoreUnavailable as exc:
        raise SweepError(str(exc)) from None


def run_sweep(plan: SweepPlan, output: SweepOutput) -> SweepResult:
    """Run ``plan`` on each target in turn, telling ``output`` how it goes; SweepError if it cannot."""
    _preflight(plan)
    url = _database_url()
    engine = db.get_engine(url)
    loads, spec = plan.spec.loads, plan.spec
    unit = "req/s" if spec.rates else "users"
    output.note(f"run {plan.run_id}: results in {redact_url(url)}")
    result = SweepResult(summaries=[])
    for target in spec.targets:

        def tick(elapsed_s: float, target: TargetSpec = target) -> Progress:
            """Show the target's progress; returns it."""
            with Session(engine) as session:
                progress = read_progress(session, plan.run_id, target.name)
            index = progress.step_index
            # Step numbers as the summary table, the dashboard and the store give them: from 0.
            step = "starting" if index is None else f"step {index} ({loads[index]} {unit}), {index + 1} of {len(loads)}"
            output.progress(
                step,
                f"{target.name}: {step}  {elapsed_s:4.0f}/{spec.target_duration_s:.0f} s"
                f"  {progress.requests} requests stored, {progress.errors} errors",
            )
            return progress

        log_path = LOG_DIR / f"{plan.run_id}-{target.name}.log"
        sent = run_target(target, plan, log_path, tick)
        kept = kept_records(log_path)
        # Records Locust kept in a file will not arrive by waiting: no wait then.
        stored = wait_until_stored(lambda: Session(engine), plan.run_id, target.name, sent, 0 if kept else STORE_WAIT_S)
        progress = tick(spec.target_duration_s)
        output.target_done()
        for line in kept:
            output.note(f"{target.name}: {line}")
            result.unstored_targets.append(target.name)
        if stored < sent:
            output.note(f"warning: {sent - stored} of {sent} requests to {target.name} not stored yet")
            settings = get_settings()
            if settings.redis_url is not None and stored == 0 and not kept:
                output.note(
                    f"hint: records go through the RQ queue {settings.queue_name!r}; is a worker consuming it? "
                    "Start one with `stampede worker` (same STAMPEDE_REDIS_URL and STAMPEDE_DATABASE_URL); "
                    "what is queued is stored once it runs"
                )
        with Session(engine) as session:
            errors = common_errors(session, plan.run_id, target.name)
        for message, count in errors:
            output.note(f"{target.name}: {count} of {progress.requests} requests failed: {message}")
        if progress.requests and progress.errors == progress.requests:
            result.failed_targets.append(target.name)
        with Session(engine) as session, session.begin():
            # Summarised now, at the end of the target's steps, and cached: reports need not rescan rows.
            result.summaries = report.step_summaries(session, plan.run_id)
    return result


def check_baseline(plan: SweepPlan) -> list[Finding]:
    """Compare the run with its sweep's baseline and record the verdict; SweepError if it is incomplete."""
    with Session(db.get_engine(_database_url())) as session, session.begin():
        try:
            return baseline.check_run(session, plan.run_id, plan.spec.regression)
        except baseline.IncompleteRun as exc:
            raise SweepError(str(exc)) from None


def mark_interrupted(plan: SweepPlan) -> None:
    """Close a run stopped between two targets (Locust closes one it stopped itself) as stopped."""
    steps = len(plan.spec.loads) * len(plan.spec.targets)
    with contextlib.suppress(SQLAlchemyError), Session(db.get_engine(_database_url())) as session, session.begin():
        store.mark_stopped_unless_complete(session, plan.run_id, steps)
