"""The master's watch over its Locust workers: a worker that stops reporting marks the current step.

Locust's master marks a worker ``missing`` once it misses its heartbeats (about 3 s) and carries on
with the users the others run, so a step planned at 16 users may run at 8. Once a second, during
the run, the watch counts the workers still reporting; when fewer report than the most seen in the
current step, it tells the run context how many were lost and how many users are left, so the step
is stored and reported with its planned and actual load.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
from locust.runners import STATE_MISSING, MasterRunner

POLL_S = 1.0


class WorkerWatch:
    """Polls ``runner``'s workers; calls ``on_loss(lost, users_left)`` whenever a step loses one more."""

    def __init__(
        self, runner: MasterRunner, step_index: Callable[[], int], on_loss: Callable[[int, int], None]
    ) -> None:
        self._runner = runner
        self._step_index = step_index
        self._on_loss = on_loss
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._watch)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def reporting(self) -> tuple[int, int]:
        """Workers still reporting, and the users they run."""
        live = [worker for worker in self._runner.clients.values() if worker.state != STATE_MISSING]
        return len(live), sum(worker.user_count for worker in live)

    def _watch(self) -> None:
        step, most, lost = self._step_index(), self.reporting()[0], 0
        while True:
            gevent.sleep(POLL_S)
            workers, users = self.reporting()
            if self._step_index() != step:  # a new step: its planned load goes to the workers left
                step, most, lost = self._step_index(), workers, 0
            most = max(most, workers)
            if most - workers > lost:
                lost = most - workers
                self._on_loss(lost, users)
