"""Our RQ worker classes: a dead worker's jobs come back within a bound, nothing outlives a worker,
and a worker whose store is down takes no jobs until it is back.

- **Recovery bound.** RQ finds a job abandoned by a dead worker once the job's heartbeat expires and
  a maintenance pass runs. Out of the box that is the job's timeout plus 60 s, found by a pass that
  an idle worker makes only between dequeues, up to ``worker_ttl - 15`` = 405 s apart: over 8
  minutes was seen. Here a job's heartbeat lasts its timeout plus :data:`HEARTBEAT_MARGIN_S` (RQ
  stops a job at its timeout anyway), idle workers wake every ``WORKER_TTL_S - 15`` s, and
  maintenance runs every :data:`MAINTENANCE_INTERVAL_S`. A job a worker had taken but not started
  (RQ's intermediate queue) is given back one minute after a pass first sees it (RQ's own rule).
- **Nothing left behind.** RQ runs its scheduler in a forked child, which lived on under PID 1,
  holding the scheduler lock, when its worker was killed with SIGKILL. A worker process asks Linux
  to send its children SIGTERM when it dies (:func:`stop_children_with_this_process`), so the
  scheduler stops as on a shutdown and releases the lock.
- **Store outages.** A job that failed, or is to be retried, makes the worker check the store. While
  it is unreachable the worker takes no jobs (so their retries are not spent on a store known to be
  down), keeps its registration alive, logs one line when the outage starts and one when it ends,
  and checks again with a backoff.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
from typing import Any

from rq import SimpleWorker, Worker
from rq.job import Job, JobStatus
from rq.queue import Queue
from sqlalchemy import select

from stampede.db import get_engine, store_problem
from stampede.schema import Request

log = logging.getLogger(__name__)

WORKER_TTL_S = 30
"""A worker's registration lasts this plus 60 s; an idle worker wakes every ``WORKER_TTL_S - 15`` s."""
MAINTENANCE_INTERVAL_S = 10
HEARTBEAT_MARGIN_S = 5
"""How long after its timeout a job in a worker's own process counts as abandoned (RQ allows 60 s)."""
STORE_PAUSE_MAX_S = 10.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_children_with_this_process() -> None:
    """Have Linux send SIGTERM to every process this one forks from now on, when this one dies.

    RQ's scheduler child then stops as on a shutdown (releasing its lock), and a work horse is
    stopped at once instead of running on alone. Elsewhere than on Linux, nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return
    parent_pid = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def in_child() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    os.register_at_fork(after_in_child=in_child)


class StampedeWorkerMixin:
    """What our workers add to RQ's: see the module's docstring. ``store_url`` is the results store."""

    log: logging.Logger
    _stop_requested: bool

    def __init__(self, *args: Any, store_url: str, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_S)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL_S)
        super().__init__(*args, **kwargs)
        self.store_url = store_url

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)  # type: ignore[misc]  # a mixin: the Worker comes later in the MRO
        if job.get_status(refresh=True) is not JobStatus.FINISHED:  # failed, or to be retried
            self._hold_while_store_down()

    def _store_problem(self) -> str | None:
        """Why the store cannot take records now (unreachable, missing, without our schema), or None."""
        try:
            with get_engine(self.store_url).connect() as connection:
                connection.execute(select(Request.id).limit(0))
        except Exception as exc:  # any driver error: the store cannot take records, whatever the cause
            return store_problem(exc, self.store_url)
        return None

    def _hold_while_store_down(self) -> None:
        problem = self._store_problem()
        if problem is None:
            return
        log.warning("%s: taking no jobs until the store is back", problem)
        pause_s = 1.0
        while not self._stop_requested:
            self.heartbeat()  # type: ignore[attr-defined]  # the Worker it is mixed into has it
            time.sleep(pause_s)
            if self._store_problem() is None:
                log.info("store reachable again: taking jobs")
                return
            pause_s = min(STORE_PAUSE_MAX_S, pause_s * 2)


class StampedeSimpleWorker(StampedeWorkerMixin, SimpleWorker):
    """RQ's ``SimpleWorker`` (jobs run in the worker's own process), with our additions."""

    def get_heartbeat_ttl(self, job: Job) -> int:
        """The job's timeout plus :data:`HEARTBEAT_MARGIN_S`: past it the job was stopped or its worker died."""
        if job.timeout is None or job.timeout < 0:
            return super().get_heartbeat_ttl(job)
        return int(job.timeout) + HEARTBEAT_MARGIN_S


class StampedeForkWorker(StampedeWorkerMixin, Worker):
    """RQ's forking ``Worker`` (each job in a forked process, which RQ watches), with our additions."""
