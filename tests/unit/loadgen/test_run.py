"""A process's run context follows the master's step messages: step, warm-up and open-loop pacing."""

import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import gevent

from loadgen.run import RunContext, public_url
from stampede.records import LoadgenSampleRecord, RunRecord, RunStatus, StepMessage


class NullSink:
    def add_loadgen_sample(self, sample: LoadgenSampleRecord) -> None:
        pass


def context(**options: object) -> RunContext:
    opts = SimpleNamespace(run_id=str(uuid.uuid4()), target_name="t", seed=0, arrival="poisson", burstiness=1.0)
    opts.__dict__.update(options)
    environment = SimpleNamespace(
        parsed_options=opts, runner=None, host="http://h:1", user_classes=[], shape_class=None
    )
    return RunContext(environment, NullSink())  # type: ignore[arg-type]


def message(index: int, **fields: object) -> StepMessage:
    data: dict[str, object] = {"run_id": str(uuid.uuid4()), "index": index, "warmup_s": 0.0, "rate_per_s": 0.0,
                               "share": 1.0, "arrival": "constant", "burstiness": 1.0, "seed": 0}  # fmt: skip
    data.update(fields)
    return StepMessage.model_validate(data)


def test_a_step_message_sets_the_step_the_run_and_the_warmup() -> None:
    ctx = context()
    data = message(2, warmup_s=30.0)
    ctx.on_step(data)
    assert ctx.step_index == 2 and ctx.run_id == data.run_id
    assert ctx.in_warmup()
    ctx.on_step(message(3, warmup_s=0.0))
    assert not ctx.in_warmup()


def test_open_loop_rate_is_the_share_of_this_process_with_the_masters_arrivals() -> None:
    ctx = context(arrival="poisson")
    ctx.on_step(message(0, rate_per_s=10.0, share=0.5, arrival="constant"))
    assert ctx.open_loop.pacer.rate_per_s == 5.0
    first, second = ctx.open_loop.pacer.reserve(), ctx.open_loop.pacer.reserve()
    assert first is not None and second is not None
    assert second - first == 200_000_000  # constant gaps at 5/s, not the local default (poisson)
    assert first <= time.perf_counter_ns()


def test_closed_loop_steps_pause_the_pacer() -> None:
    ctx = context()
    ctx.on_step(message(0))
    assert ctx.open_loop.pacer.reserve() is None


def test_user_seeds_repeat_across_identical_runs() -> None:
    a, b = context(seed=7), context(seed=7)
    assert [a.user_seed() for _ in range(3)] == [b.user_seed() for _ in range(3)]
    assert len({a.user_seed() for _ in range(3)}) == 3


def test_urls_lose_credentials_before_they_are_stored() -> None:
    assert public_url("https://user:secret@gpu1:8000/v1?key=abc") == "https://gpu1:8000/v1"


class RunSink(NullSink):
    def __init__(self) -> None:
        self.runs: list[RunRecord] = []

    def add_step(self, step: object) -> None:
        pass

    def add_run(self, run: RunRecord) -> None:
        self.runs.append(run)


def ended(steps_ahead_s: float | None, done: bool = False) -> RunStatus:
    """The status a run ends with, after a stepped shape last said its steps end ``steps_ahead_s`` on."""
    sink = RunSink()
    ctx = context()
    ctx.sink = sink  # type: ignore[assignment]
    ctx._run = RunRecord(id=ctx.run_id, name="r", status=RunStatus.RUNNING, started_at=datetime.now(UTC))
    if steps_ahead_s is not None:
        ctx.steps_ahead(steps_ahead_s)
    if done:
        ctx.end_steps()
    ctx.end_run()
    return sink.runs[-1].status


def test_a_run_ended_with_steps_ahead_is_stopped_and_one_past_its_last_step_finished() -> None:
    assert ended(30.0) is RunStatus.STOPPED  # Ctrl-C mid-sweep
    assert ended(30.0, done=True) is RunStatus.FINISHED  # the shape ran its last step
    assert ended(-0.5) is RunStatus.FINISHED  # stopped after the last step ended, before the shape ticked
    assert ended(None) is RunStatus.FINISHED  # no stepped shape: its user or time limit ended it


def test_open_loop_due_times_are_handed_out_one_at_a_time_at_the_rate() -> None:
    ctx = context()
    ctx.on_step(message(0, rate_per_s=100.0, arrival="constant"))
    try:
        first, second = ctx.open_loop.next_due_ns(), ctx.open_loop.next_due_ns()
        assert second - first == 10_000_000
        gevent.sleep(0.1)  # no one takes a send for 100 ms: one due time waits, none is booked further
        third = ctx.open_loop.next_due_ns()
        assert third - second == 10_000_000 and time.perf_counter_ns() - third > 50_000_000  # sent late
        ctx.on_step(message(0, rate_per_s=0.0))  # a closed-loop step: nothing more is due
        with gevent.Timeout(0.2, False):
            ctx.open_loop.next_due_ns()  # the one already waiting
            ctx.open_loop.next_due_ns()
            raise AssertionError("a send was due with the pacer paused")
    finally:
        ctx.open_loop.stop()


def test_a_new_rate_applies_at_once_not_after_the_old_rates_gap() -> None:
    ctx = context()
    ctx.on_step(message(0, rate_per_s=0.5, arrival="constant"))
    try:
        ctx.open_loop.next_due_ns()  # the first send is due at once; the next one at 0.5/s would be 2 s later
        ctx.on_step(message(1, rate_per_s=100.0, arrival="constant"))
        before = time.perf_counter_ns()
        ctx.open_loop.next_due_ns()
        assert time.perf_counter_ns() - before < 500_000_000
    finally:
        ctx.open_loop.stop()
    assert ctx.open_loop.pacer.rate_per_s == 0  # a run started again starts its schedule afresh
