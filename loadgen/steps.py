"""A stepped concurrency ladder, as a locustfile to add beside ``loadgen/chat.py``.

    locust -f loadgen/chat.py,loadgen/steps.py --headless --host URL --steps 1,2,4,8 \
        --step-duration-s 20 --warmup-s 5 OpenAIChatUser

Kept apart from chat.py because Locust lets a shape class override ``-u``: plain runs stay plain.
"""

from __future__ import annotations

import threading
from typing import Any

from locust import LoadTestShape, events
from locust.env import Environment

from loadgen.options import add_step_arguments, parse_rates, step_users
from loadgen.run import RunContext
from stampede.processes import sigterm_as_interrupt


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    add_step_arguments(parser)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    # Headless with a shape, Locust (2.47) runs the whole shape before it installs its SIGTERM handler:
    # until then SIGTERM (kill, timeout, a stopped sweep) killed it on the spot, with the run left
    # "running" and records unstored. As Ctrl-C instead, it stops the shape and shuts down cleanly.
    if environment.shape_class is not None and threading.current_thread() is threading.main_thread():
        sigterm_as_interrupt()


class StepLoadShape(LoadTestShape):
    """Holds each step for ``--step-duration-s``, then stops the test.

    Closed loop: step i runs ``--steps[i]`` users. Open loop (``--rates``): step i sends
    ``--rates[i]`` requests per second with at most ``--steps`` (one value) in flight.
    """

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        environment = self.runner.environment
        opts = environment.parsed_options
        rates = parse_rates(opts.rates)
        users = step_users(opts.steps, rates)
        index = int(self.get_run_time() // opts.step_duration_s)
        context: RunContext = environment.stampede  # type: ignore[attr-defined]
        if index >= len(users):
            context.end_steps()  # the last window closes now, not after in-flight requests drain
            return None
        context.steps_ahead(len(users) * opts.step_duration_s - self.get_run_time())
        context.enter_step(index, users[index], opts.warmup_s, rates[index] if rates else None)
        # Start every step's users within about a second; the warm-up covers the ramp.
        return users[index], float(max(users[index], 1))
