"""A stepped concurrency ladder, as a locustfile to add beside ``loadgen/chat.py``.

    locust -f loadgen/chat.py,loadgen/steps.py --headless --host URL --steps 1,2,4,8 \
        --step-duration-s 20 --warmup-s 5 OpenAIChatUser

Kept apart from chat.py because Locust lets a shape class override ``-u``: plain runs stay plain.
"""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass
from typing import Any

from locust import LoadTestShape, events
from locust.env import Environment
from locust.stats import RequestStats, calculate_response_time_percentile, diff_response_time_dicts

from loadgen.options import add_step_arguments
from loadgen.run import context_of
from stampede.processes import sigterm_as_interrupt
from stampede.sweepfile import SweepFile


@events.init_command_line_parser.add_listener
def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_step_arguments(parser)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    # Headless with a shape, Locust (2.47) runs the whole shape before it installs its SIGTERM handler:
    # until then SIGTERM (kill, timeout, a stopped sweep) killed it on the spot, with the run left
    # "running" and records unstored. As Ctrl-C instead, it stops the shape and shuts down cleanly.
    if environment.shape_class is not None and threading.current_thread() is threading.main_thread():
        sigterm_as_interrupt()


RAMP_S = 1.0
"""Every step's users start within about this long (the spawn rate is the step's users per second)."""


class Completions:
    """Requests completed since a mark and their median E2E, from Locust's statistics (on a master, as
    its workers report them every few seconds)."""

    def __init__(self, stats: RequestStats) -> None:
        self._stats = stats
        self._count = 0
        self._times: dict[int, int] = {}

    def mark(self) -> None:
        self._count, self._times = self._stats.total.num_requests, dict(self._stats.total.response_times)

    def enough(self, since_mark_s: float, min_completions: int) -> bool:
        """At least ``min_completions`` since the mark, and the mark at least three median E2E ago."""
        count = self._stats.total.num_requests - self._count
        if count < max(1, min_completions):
            return False
        times = diff_response_time_dicts(self._stats.total.response_times, self._times)
        return since_mark_s >= 3 * calculate_response_time_percentile(times, count, 0.5) / 1000


@dataclass
class AutoStep:
    """The current step of ``--step-duration-s auto``: when it began and when its count began."""

    index: int
    started_s: float
    completions: Completions
    marked_s: float | None = None


class StepLoadShape(LoadTestShape):
    """Holds each step for ``--step-duration-s``, then stops the test.

    Closed loop: step i runs ``--steps[i]`` users. Open loop (``--rates``): step i sends
    ``--rates[i]`` requests per second with at most ``--steps`` (one value) in flight.
    ``--step-duration-s auto``: a step counts completions from ``--warmup-s`` plus the ramp after its
    start (about when its window opens) and ends once they are enough (:meth:`Completions.enough`),
    or after ``--max-step-duration-s``. The report still judges each window (too short or not).
    """

    auto: AutoStep | None = None

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        context = context_of(self.runner.environment)
        plan = context.plan.sweep  # read from the options once per test
        users, rates, duration_s = plan.step_users, plan.rates, plan.step_duration_s
        now_s = self.get_run_time()
        if duration_s != "auto":
            index, remaining_s = int(now_s // duration_s), len(users) * duration_s - now_s
        else:
            index = self._auto_index(now_s, plan)
            remaining_s = (len(users) - index) * plan.max_step_duration_s  # at most
        if index >= len(users):
            context.end_steps()  # the last window closes now, not after in-flight requests drain
            return None
        context.steps_ahead(remaining_s)
        context.enter_step(index, users[index], plan.warmup_s, rates[index] if rates else None)
        # Start every step's users within about a second; the warm-up covers the ramp.
        return users[index], float(max(users[index], 1))

    def _auto_index(self, now_s: float, plan: SweepFile) -> int:
        assert self.runner is not None
        step = self.auto
        if step is None or now_s < step.started_s:  # a run started (again)
            step = self.auto = AutoStep(0, now_s, Completions(self.runner.stats))
        elapsed_s = now_s - step.started_s
        if step.marked_s is None and elapsed_s >= plan.warmup_s + RAMP_S:
            step.completions.mark()
            step.marked_s = now_s
        enough = step.marked_s is not None and step.completions.enough(now_s - step.marked_s, plan.min_completions)
        if enough or elapsed_s >= plan.max_step_duration_s:
            step = self.auto = AutoStep(step.index + 1, now_s, Completions(self.runner.stats))
        return step.index
