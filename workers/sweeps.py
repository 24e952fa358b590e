"""Scheduled sweeps: RQ's cron scheduler enqueues them, a worker runs them and checks for regressions.

``python -m workers scheduler`` (``stampede scheduler``) reads the schedules from the database and
keeps one of RQ's cron jobs (``rq.cron.CronJob``: cron parsing, due times) per schedule, reloading
the list every minute. RQ's cron jobs enqueue with RQ's default (pickle) serializer, which our
workers never read from Redis; ours enqueue with the JSON serializer and carry only the schedule's
name, a plain string. A worker on the sweeps queue (``stampede worker stampede-sweeps``) runs
``run_scheduled_sweep``: the sweep file as a ``stampede sweep --file ... --check`` subprocess.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.cron import CronJob
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy.exc import SQLAlchemyError

from stampede.db import SchemaError, settings_session, store_problem
from stampede.schedules import list_schedules
from stampede.schema import Run, Schedule
from stampede.settings import get_settings, redact_url
from stampede.sweep import REGRESSION_EXIT
from stampede.sweepfile import SweepFile

SWEEPS_QUEUE = "stampede-sweeps"
RUN_SCHEDULED_SWEEP = "workers.sweeps.run_scheduled_sweep"
RELOAD_S = 60.0
RETRY_S = 5.0
# Headroom over a sweep's planned length: start-up, draining in-flight requests, the summary.
JOB_MARGIN_S = 600

log = logging.getLogger(__name__)


def run_scheduled_sweep(name: str) -> dict[str, Any]:
    """Run the scheduled sweep ``name`` and compare it with its baseline; returns the verdict."""
    with settings_session() as session:
        schedule = session.get(Schedule, name)
        if schedule is None:
            raise ValueError(f"no schedule named {name!r} (removed since it was enqueued?)")
        spec = SweepFile.model_validate(schedule.sweep)
    run_id = uuid.uuid4()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sweep.json"
        path.write_text(spec.model_dump_json())
        command = [sys.executable, "-m", "stampede", "sweep", "--file", str(path), "--run-id", str(run_id), "--check"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=spec.duration_s + JOB_MARGIN_S)
    if result.returncode not in (0, REGRESSION_EXIT):
        raise RuntimeError(f"sweep {name!r} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    with settings_session() as session:
        run = session.get(Run, run_id)
        findings = run.findings if run is not None else []
    log.info("scheduled sweep %s: run %s, %d finding(s)", name, run_id, len(findings))
    return {"run_id": str(run_id), "regression": result.returncode == REGRESSION_EXIT, "findings": findings}


class JsonCronJob(CronJob):
    """RQ's cron job, enqueued with the JSON serializer our workers read."""

    def enqueue(self, connection: Redis) -> Job:
        queue = Queue(self.queue_name, connection=connection, serializer=JSONSerializer)
        job = queue.enqueue(self.func_name, *self.args, **self.kwargs, **self.job_options)
        log.info("enqueued scheduled sweep %s on %s", self.args[0], self.queue_name)
        return job


def cron_job(schedule: Schedule, queue_name: str) -> JsonCronJob:
    """The cron job that enqueues ``run_scheduled_sweep(name)`` for a schedule."""
    return JsonCronJob(
        queue_name=queue_name,
        func_name=RUN_SCHEDULED_SWEEP,
        args=(schedule.name,),
        cron=schedule.cron,
        job_timeout=int(SweepFile.model_validate(schedule.sweep).duration_s + JOB_MARGIN_S),
        name=f"stampede-schedule:{schedule.name}",
    )


class SweepScheduler:
    """RQ cron jobs for the schedules in the database, kept in step with it."""

    def __init__(self, connection: Redis, queue_name: str) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.jobs: dict[str, tuple[str, JsonCronJob]] = {}  # name -> (definition, cron job)
        self.redis_down = False
        """The last enqueue failed: due sweeps stay due and are retried every RETRY_S."""

    def reload(self) -> None:
        """Add, replace or drop cron jobs so they match the schedules table."""
        with settings_session() as session:
            current = {s.name: s for s in list_schedules(session)}
        for name in set(self.jobs) - set(current):
            del self.jobs[name]
        for name, schedule in current.items():
            definition = schedule.cron + json.dumps(schedule.sweep, sort_keys=True)
            if self.jobs.get(name, ("", None))[0] != definition:
                self.jobs[name] = (definition, cron_job(schedule, self.queue_name))
                log.info("schedule %s: '%s'", name, schedule.cron)

    def enqueue_due(self) -> list[str]:
        """Enqueue every sweep that is due; returns their names.

        While Redis is away a due sweep stays due (it is enqueued once Redis is back, late rather than
        lost) and the scheduler goes on; it says so once, and once more when Redis is back.
        """
        due = []
        for name, (_, job) in self.jobs.items():
            if job.should_run():
                try:
                    job.enqueue(self.connection)
                except RedisError as exc:
                    if not self.redis_down:
                        log.warning("cannot enqueue sweep %s (%s: %s); retrying every %g s", name,
                                    type(exc).__name__, exc, RETRY_S)  # fmt: skip
                    self.redis_down = True
                    continue
                if self.redis_down:
                    log.warning("Redis is back: sweep %s enqueued", name)
                    self.redis_down = False
                job.set_enqueue_time(datetime.now(UTC))
                due.append(name)
        return due

    def sleep_s(self) -> float:
        """Seconds until the next sweep is due (or the next retry), at most the reload interval."""
        if self.redis_down:
            return RETRY_S
        times = [job.next_enqueue_time for _, job in self.jobs.values() if job.next_enqueue_time]
        if not times:
            return RELOAD_S
        return max(0.0, min(RELOAD_S, (min(times) - datetime.now(UTC)).total_seconds()))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options of ``python -m workers scheduler`` (``stampede scheduler``)."""
    parser = argparse.ArgumentParser(prog="stampede scheduler", description=__doc__)
    parser.add_argument("--queue", default=SWEEPS_QUEUE, help=f"queue for the sweeps (default: {SWEEPS_QUEUE})")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """``python -m workers scheduler``: enqueue scheduled sweeps when due, until stopped."""
    args = parse_args(argv)
    settings = get_settings()
    if settings.redis_url is None:
        print("stampede scheduler: STAMPEDE_REDIS_URL is not set; scheduling needs Redis", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redis_url = settings.redis_url.get_secret_value()
    log.info("scheduler: Redis %s, queue %s", redact_url(redis_url), args.queue)
    scheduler = SweepScheduler(Redis.from_url(redis_url), args.queue)
    while True:
        try:
            scheduler.reload()
        except (SQLAlchemyError, SchemaError) as exc:  # the database is away: keep the schedules already loaded
            problem = store_problem(exc, settings.database_url.get_secret_value())
            log.warning("cannot read the schedules, keeping those loaded: %s", problem)
        scheduler.enqueue_due()
        time.sleep(scheduler.sleep_s())
