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
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gevent
import gevent.event
import gevent.queue
import orjson
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen.arrivals import Arrival, ArrivalSchedule, Pacer
from loadgen.clients import APIS, ChatApi
from loadgen.health import HealthMonitor
from loadgen.prompts import Prompt, get_prompt_set
from loadgen.sinks import Sink
from loadgen.tally import RequestTally
from loadgen.tokenizers import TokenCounter, load_tokenizer
from stampede.records import Api, RunRecord, RunStatus, StepRecord, utc_now

log = logging.getLogger(__name__)

STEP_MESSAGE = "stampede_step"
PAUSED_POLL_S = 0.05
"""How often an open-loop pacer with no rate (a closed-loop step) looks again."""
HOSTNAME = socket.gethostname()


def public_url(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to store."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RunContext:
    """Per-process run state; attached to the Locust environment as ``environment.stampede``."""

    def __init__(self, environment: Environment, sink: Sink) -> None:
        self.environment = environment
        self.sink = sink
        self.step_index = 0
        self._measure_from_ns = 0
        self._step: StepRecord | None = None
        self._run: RunRecord | None = None
        self._steps_end_ns = 0
        """When a stepped load shape's last step ends (monotonic), while it has steps to run; else 0."""
        # Arrivals are configured by the step messages, which carry the master's options to workers.
        self.pacer = Pacer(ArrivalSchedule(Arrival.POISSON), time.perf_counter_ns)
        self._due: gevent.queue.Queue[int] = gevent.queue.Queue(maxsize=1)
        self._ticker: gevent.Greenlet | None = None
        self._rate_changed = gevent.event.Event()
        self._arrivals: tuple[str, float, int] | None = None
        self.health = HealthMonitor(sink.add_loadgen_sample, self._describe, HOSTNAME)
        self.tally = RequestTally(sink, HOSTNAME)
        self._users = itertools.count()
        self._prompts: dict[str, tuple[Prompt, ...]] = {}
        self._tokenizers: dict[str, TokenCounter] = {}

    @property
    def options(self) -> Any:
        return self.environment.parsed_options

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
        return hash((self.options.seed, worker, next(self._users)))

    def in_warmup(self) -> bool:
        return time.perf_counter_ns() < self._measure_from_ns

    def prompts(self) -> tuple[Prompt, ...]:
        """The run's prompt set, loaded once per process (ValueError if it cannot be)."""
        spec = self.options.prompt_set  # read now: a worker learns the master's options at spawn
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
        opts = self.options
        config = {
            "host": public_url(self.environment.host or ""),
            "user_classes": [u.__name__ for u in self.environment.user_classes],
            "model": opts.model,
            "max_tokens": opts.max_tokens,
            "prompt_set": opts.prompt_set,
        }
        for name in (
            "steps", "rates", "step_duration_s", "warmup_s", "min_completions", "request_rate", "arrival", "burstiness"
        ):  # fmt: skip
            if hasattr(opts, name):
                config[name] = getattr(opts, name)
        if opts.sweep_config:
            config["sweep"] = orjson.loads(opts.sweep_config)
        self._run = RunRecord(
            id=self.run_id,
            name=opts.run_name or f"{self.target} {utc_now():%Y-%m-%d %H:%M}",
            status=RunStatus.RUNNING,
            started_at=utc_now(),
            config=config,
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
            model=self.options.model,
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
        runner = self.environment.runner
        data = {
            "run_id": str(self.run_id),
            "index": self._step.index,
            "warmup_s": self._step.warmup_s,
            "rate_per_s": self._step.request_rate_per_s or 0.0,
            "share": 1.0,
            "arrival": self.options.arrival,
            "burstiness": self.options.burstiness,
            "seed": self.options.seed,
        }
        if isinstance(runner, MasterRunner):
            # Each worker paces its share of the rate; the share follows workers joining or leaving.
            data["share"] = 1.0 / max(1, runner.worker_count)
            runner.send_message(STEP_MESSAGE, data)
        self.on_step(data)

    # Every process

    def next_due_ns(self) -> int:
        """Open loop: wait until a send is due, then return when it was due (in the past when every user
        was busy: the send is late, and its delay is recorded).

        One greenlet paces the whole process and hands each due time to the first user waiting, so
        idle users hold no sends booked ahead: a new rate applies from the next send, and the run
        stops with its last step.
        """
        if self._ticker is None:
            self._ticker = gevent.spawn(self._pace)
        return self._due.get()

    def stop_pacing(self) -> None:
        """End open-loop pacing; a run started again (the web UI) starts its schedule afresh."""
        if self._ticker is not None:
            self._ticker.kill()
            self._ticker = None
        self._due = gevent.queue.Queue(maxsize=1)
        self.pacer.set_rate(0.0)

    def _pace(self) -> None:
        self._rate_changed.clear()  # the rate this pacer starts with is no change
        while True:
            due_ns = self.pacer.reserve()
            if due_ns is None:  # paused: a closed-loop step
                gevent.sleep(PAUSED_POLL_S)
                continue
            wait_ns = due_ns - time.perf_counter_ns()
            if wait_ns > 0 and self._rate_changed.wait(wait_ns / 1e9):
                self._rate_changed.clear()  # a new rate: its schedule starts now, not after this gap
                continue
            self._due.put(due_ns)  # waits while every user is busy; the due time keeps its place

    def on_step(self, data: dict[str, Any]) -> None:
        arrivals = (data["arrival"], data["burstiness"], data["seed"])
        if arrivals != self._arrivals:
            # Each worker draws its own gaps: the same sequence everywhere would line bursts up.
            worker = getattr(self.environment.runner, "worker_index", 0)
            self.pacer.set_schedule(ArrivalSchedule(Arrival(arrivals[0]), arrivals[1], hash((arrivals[2], worker))))
            self._arrivals = arrivals
        if self.pacer.set_rate(data["rate_per_s"] * data["share"]):
            self._rate_changed.set()
        if data["index"] == self.step_index and self._measure_from_ns:
            return
        self.options.run_id = data["run_id"]
        self.step_index = data["index"]
        self._measure_from_ns = time.perf_counter_ns() + int(data["warmup_s"] * 1e9)
