"""The RQ worker process: stores record batches from our queues into the configured database.

It is RQ's ``SimpleWorker`` (jobs run in the worker process; ``--fork`` for RQ's forking ``Worker``)
with the JSON serializer and a scheduler (``Retry`` intervals need one), so
``rq worker --worker-class rq.SimpleWorker --with-scheduler --serializer rq.serializers.JSONSerializer``
runs the same jobs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
import time

import redis
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from stampede.db import SchemaError, get_engine, store_problem
from stampede.settings import get_settings, redact_url
from workers.rqjob import StampedeJob
from workers.worker_classes import StampedeForkWorker, StampedeSimpleWorker, stop_children_with_this_process

log = logging.getLogger(__name__)

MAX_PAUSE_S = 30.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options of ``python -m workers`` (``stampede worker``)."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="stampede worker", description=__doc__)
    parser.add_argument(
        "queues", nargs="*", default=[settings.queue_name], help="queues to work on (default: STAMPEDE_QUEUE_NAME)"
    )
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument(
        "--fork",
        action="store_true",
        help="run each job in a forked process (RQ's default) instead of in this one: a job whose process "
        "dies is then retried at once, where otherwise RQ's abandoned-job handling retries it within about "
        "a minute (docs/fleet.md); about five times slower for record batches (fork and a fresh database "
        "connection per job)",
    )
    parser.add_argument("--name", default=None, help="worker name (default: RQ's, unique per process)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser.parse_args(argv)


def _warm_up_engine(url: str) -> bool:
    """Connect once; False when the database answers but its schema is not the one the jobs write."""
    # One connection here makes SQLAlchemy learn the server's dialect details once, instead of in
    # every forked job (with --fork), and makes the schema ready (a SQLite file is upgraded; see
    # stampede.db). The pool is then emptied: a connection must never be shared across a fork, so each
    # forked job still opens its own; jobs run in this process reuse theirs.
    engine = get_engine(url)
    try:
        with engine.connect():
            pass
    except SchemaError as exc:  # every job would fail: refuse now, saying what to run
        log.error("%s", exc)
        return False
    except Exception as exc:  # database not up yet: each job will find out, and retry
        log.warning("%s; jobs will retry until it is back", store_problem(exc, url))
    engine.dispose()
    return True


def main(argv: list[str]) -> int:
    """Run a worker until stopped (or, with ``--burst``, until the queues are empty)."""
    args = parse_args(argv)
    settings = get_settings()
    if settings.redis_url is None:
        print("stampede worker: STAMPEDE_REDIS_URL is not set; workers need Redis", file=sys.stderr)
        return 2
    redis_url = settings.redis_url.get_secret_value()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "worker for queues %s: Redis %s, database %s",
        ",".join(args.queues),
        redact_url(redis_url),
        redact_url(settings.database_url.get_secret_value()),
    )
    # Load the jobs' code once here, so each forked job starts without paying for the imports; frozen,
    # those objects are never walked by the collector.
    importlib.import_module("workers.jobs")
    store_url = settings.database_url.get_secret_value()
    if not _warm_up_engine(store_url):
        return 2
    gc.freeze()
    stop_children_with_this_process()
    pause_s = 1.0
    worker_class = StampedeForkWorker if args.fork else StampedeSimpleWorker
    while True:
        connection = Redis.from_url(redis_url)
        queues = [
            Queue(name, connection=connection, serializer=JSONSerializer, job_class=StampedeJob) for name in args.queues
        ]
        try:
            # Constructing the worker talks to Redis already.
            worker = worker_class(
                queues,
                connection=connection,
                serializer=JSONSerializer,
                job_class=StampedeJob,
                name=args.name,
                store_url=store_url,
            )
            worker.work(burst=args.burst, with_scheduler=True, logging_level=args.log_level)
            return 0
        except redis.exceptions.ConnectionError as exc:
            # RQ rides out Redis outages while waiting for jobs, not while starting: a worker started
            # before Redis (docker compose, a reboot) waits for it instead of exiting.
            log.warning("Redis unreachable (%s); starting again in %.0f s", type(exc).__name__, pause_s)
            time.sleep(pause_s)
            pause_s = min(MAX_PAUSE_S, pause_s * 2)
