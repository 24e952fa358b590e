"""A sink's queue of jobs: in memory up to a bound of records, then in the spill file, in one order.

Jobs leave in the order they were added, so a run's final status is never overwritten by an earlier
one replayed late: once one job has gone to the spill file, later ones follow it there until the
file is read back to its end.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from loadgen.sinkfiles import SpillFile
from loadgen.storejobs import records_in

QueuedJob = tuple[str, Any, Path | None]
"""A job, its argument, and the journal segment that keeps it on disk (removed once it is delivered)."""


class JobQueue:
    """Holds jobs in memory up to ``max_records`` records, the rest in ``spill``."""

    def __init__(self, max_records: int, spill: SpillFile) -> None:
        self.max_records = max_records
        self.spill = spill
        self._jobs: deque[QueuedJob] = deque()
        self.records = 0
        """Records of the jobs held in memory."""

    def put(self, job: str, arg: Any, segment: Path | None) -> bool:
        """Queue a job; True when it went to the spill file (its segment is then no longer needed)."""
        size = records_in(job, arg)
        if self.spill.unread == 0 and self.records + size <= self.max_records:
            self._jobs.append((job, arg, segment))
            self.records += size
            return False
        self.spill.append(job, arg)
        return True

    def take(self) -> QueuedJob | None:
        """The oldest job, or None when none is queued."""
        if self._jobs:
            job, arg, segment = self._jobs.popleft()
            self.records -= records_in(job, arg)
            return job, arg, segment
        if self.spill.unread == 0:
            return None
        return self.spill.take()

    def in_memory(self) -> list[QueuedJob]:
        return list(self._jobs)

    def held(self) -> list[tuple[str, Any]]:
        """Every queued job, in order: those in memory, then the spilled ones."""
        return [(job, arg) for job, arg, _ in self._jobs] + self.spill.unread_jobs()
