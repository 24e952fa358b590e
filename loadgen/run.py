"""A run as one Locust process sees it: run id, target, the current load step, and the sink.

The master (or the single local process) decides steps: it stores run and step rows and tells
every process which step is current with a Locust custom message. Each process then tags its own
records with that step and with whether they fall in the step's warm-up, using its own monotonic
clock, so hosts need no clock agreement for it.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen.arrivals import OpenLoop
from loadgen.clients import APIS, ChatApi
from loadgen.health import HealthMonitor
from loadgen.options import ChatOptions, chat_options, plan_of
from loadgen.prompts import Prompt, get_prompt_set
from loadgen.sinks import Sink
from loadgen.tally import RequestTally
from loadgen.tokenizers import TokenCounter, load_tokenizer
from stampede.plan import LocustPlan, RunConfig
from stampede.records import Api, RunRecord, RunStatus, StepMessage, StepRecord, utc_now

log = logging.getLogger(__name__)

STEP_MESSAGE = "stampede_step"
HOSTNAME = socket.gethostname()


def public_url(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to store."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RunContext:
    """Per-process run state; attached to the Locust environment by :func:`attach` (read with :func:`context_of`)."""

    def __init__(self, environment: Environment, sink: Sink) -> None:
        self.environment = environment
        self.sink = sink
        self.step_index = 0
        self._measure_from_ns = 0
        self._step: StepRecord | None = None
        self._run: RunRecord | None = None
        self._steps_end_ns = 0
        """When a stepped load shape's last step ends (monotonic), while it has steps to run; else 0."""
        # Arrivals are configured by the step messages, which carry the master's plan to workers.
        self.open_loop = OpenLoop(lambda: getattr(self.environment.runner, "worker_index", 0))
        self._plan: LocustPlan | None = None
        self.health = HealthMonitor(sink.add_loadgen_sample, self._describe, HOSTNAME)
        self.tally = RequestTally(sink, HOSTNAME)
        self._users = itertools.count()
        self._prompts: dict[str, tuple[Prompt, ...]] = {}
        self._tokenizers: dict[str, TokenCounter] = {}

    @property
    def options(self) -> ChatOptions:
        return chat_options(self.environment.parsed_options)

    @property
    def plan(self) -> LocustPlan:
        """The run's plan, read from the options once per test (ValueError naming a bad flag). On a worker,
        after the master's options arrive with its first users."""
        if self._plan is None:
            self._plan = self.read_plan()
        return self._plan

    def read_plan(self) -> LocustPlan:
        """The plan the options give now (ValueError naming a bad flag); :attr:`plan` keeps it for the test."""
        return plan_of(self.environment.parsed_options, self.environment.host or "", self.chat_api.api, self.target)

    def forget_plan(self) -> None:
        """The test ended: the next one (the web UI's) reads its options again."""
        self._plan = None

    @property
    def run_id(self) -> uuid.UUID:
        return uuid.UUID(self.options.run_id)

    @property
    def target(self) -> str:
        return self.options.target_name or urlsplit(self.environment.host or "").netloc or "target"

    @property
    def chat_api(self) -> ChatApi:
        """The API of the selected user classes (the first one's, if several were selected)."""
        for user_class in self.environment.user_classes:
            api = getattr(user_class, "chat_api", None)
            if api is not None:
                return api
        return APIS[Api.OPENAI_CHAT]

    @property
    def is_coordinator(self) -> bool:
        """True for the process that owns steps: the master, or the only process."""
        return not isinstance(self.environment.runner, WorkerRunner)

    def _describe(self) -> tuple[uuid.UUID, str, int]:
        return self.run_id, self.target, self.step_index

    def user_seed(self) -> int:
        """A seed for the next user of this process: runs with the same ``--seed`` repeat."""
        worker = getattr(self.environment.runner, "worker_index", 0)
        return hash((self.plan.sweep.seed, worker, next(self._users)))

    def in_warmup(self) -> bool:
        return time.perf_counter_ns() < self._measure_from_ns

    def prompts(self) -> tuple[Prompt, ...]:
        """The run's prompt set, loaded once per process (ValueError if it cannot be)."""
        spec = self.plan.sweep.prompt_set
        if spec not in self._prompts:
            self._prompts[spec] = get_prompt_set(spec)
        return self._prompts[spec]

    def tokenizer(self) -> TokenCounter | None:
        """The client-side tokenizer, loaded once per process; None when none was named."""
        spec = self.options.tokenizer
        if spec and spec not in self._tokenizers:
            self._tokenizers[spec] = load_tokenizer(spec)
        return self._tokenizers.get(spec) if spec else None

    # Coordinator side

    def start_run(self) -> None:
        self._steps_end_ns = 0  # a test the web UI started again starts over
        plan, shaped = self.plan, self.environment.shape_class is not None
        sweep = plan.sweep
        config = RunConfig(
            host=public_url(self.environment.host or ""),
            user_classes=[u.__name__ for u in self.environment.user_classes],
            model=plan.target.model,
            max_tokens=sweep.max_tokens,
            prompt_set=sweep.prompt_set,
            steps=sweep.step_users if shaped else None,
            rates=sweep.rates if shaped else None,
            step_duration_s=sweep.step_duration_s if shaped else None,
            warmup_s=sweep.warmup_s,
            min_completions=sweep.min_completions,
            request_rate=self.options.request_rate,
            arrival=sweep.arrival,
            burstiness=sweep.burstiness,
            sweep=sweep if plan.from_sweep else None,
        )
        self._run = RunRecord(
            id=self.run_id,
            name=sweep.name
            if plan.from_sweep
            else self.options.run_name or f"{self.target} {utc_now():%Y-%m-%d %H:%M}",
            status=RunStatus.RUNNING,
            started_at=utc_now(),
            config=config.model_dump(mode="json"),
        )
        self.sink.add_run(self._run)

    def enter_step(self, index: int, users: int, warmup_s: float, rate_per_s: float | None = None) -> None:
        """Make ``index`` the current step (no-op if it already is) and tell every process."""
        if self._step is not None and self._step.index == index:
            self._broadcast()  # late-joining workers learn the current step from the repeat
            return
        self.end_step()
        self._step = StepRecord(
            run_id=self.run_id,
            target=self.target,
            index=index,
            users=users,
            request_rate_per_s=rate_per_s,
            api=self.chat_api.api,
            model=self.plan.target.model,
            base_url=public_url(self.environment.host or ""),
            started_at=utc_now(),
            warmup_s=warmup_s,
        )
        self.sink.add_step(self._step)
        self._broadcast()

    def workers_lost(self, lost: int, users_left: int) -> None:
        """The current step lost ``lost`` Locust workers so far; ``users_left`` users still run."""
        if self._step is not None and self._step.ended_at is None:
            first = self._step.lost_at or utc_now()
            update = {"lost_workers": lost, "lost_at": first, "users_left": users_left}
            self._step = self._step.model_copy(update=update)
            self.sink.add_step(self._step)
            log.warning("step %d lost %d Locust worker(s): %d users left", self._step.index, lost, users_left)

    def end_step(self) -> None:
        if self._step is not None and self._step.ended_at is None:
            self._step = self._step.model_copy(update={"ended_at": utc_now()})
            self.sink.add_step(self._step)

    def steps_ahead(self, remaining_s: float) -> None:
        """A stepped load shape has steps to run, the last ending ``remaining_s`` from now."""
        self._steps_end_ns = time.monotonic_ns() + round(remaining_s * 1e9)

    def end_steps(self) -> None:
        """The load shape ran its last step: the run is complete."""
        self.end_step()
        self._steps_end_ns = 0

    def end_run(self) -> None:
        """Close the run: stopped when its stepped load shape had steps left, else finished (a run
        without one ends when its user or its time limit says)."""
        self.end_step()
        if self._run is not None:
            # Past the last step's end the steps are done, though the shape has not ticked since.
            status = RunStatus.STOPPED if time.monotonic_ns() < self._steps_end_ns else RunStatus.FINISHED
            self._run = self._run.model_copy(update={"status": status, "ended_at": utc_now()})
            self.sink.add_run(self._run)

    def _broadcast(self) -> None:
        assert self._step is not None
        runner, sweep = self.environment.runner, self.plan.sweep
        step = StepMessage(
            run_id=self.run_id,
            index=self._step.index,
            warmup_s=self._step.warmup_s,
            rate_per_s=self._step.request_rate_per_s or 0.0,
            arrival=sweep.arrival,
            burstiness=sweep.burstiness,
            seed=sweep.seed,
        )
        if isinstance(runner, MasterRunner):
            # Each worker paces its share of the rate; the share follows workers joining or leaving.
            step = step.model_copy(update={"share": 1.0 / max(1, runner.worker_count)})
            runner.send_message(STEP_MESSAGE, step.model_dump(mode="json"))
        self.on_step(step)

    # Every process

    def on_step(self, step: StepMessage) -> None:
        """Follow the coordinator's step: its run, its warm-up and its share of an open-loop rate."""
        self.open_loop.follow(step)
        if step.index == self.step_index and self._measure_from_ns:
            return
        self.options.run_id = str(step.run_id)
        self.step_index = step.index
        self._measure_from_ns = time.perf_counter_ns() + int(step.warmup_s * 1e9)


def attach(environment: Environment, context: RunContext) -> None:
    """Make ``context`` the run context of ``environment``."""
    environment.stampede = context  # type: ignore[attr-defined]  # Locust's Environment has no slot of ours


def context_of(environment: Environment) -> RunContext:
    """The run context :func:`attach` gave ``environment``."""
    context = getattr(environment, "stampede", None)
    if not isinstance(context, RunContext):
        raise RuntimeError("no Stampede run context: load loadgen/chat.py as a locustfile")
    return context
