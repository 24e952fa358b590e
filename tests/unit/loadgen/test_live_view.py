"""The live view behind the LLM tab: a tapped sink still delivers every record, and the table shows
the window's and the step's figures, the generator's health, and each worker's health from reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import gevent
import msgpack
from locust.env import Environment

from loadgen.live import Slices
from loadgen.webui import MASTER_DELAY_S, LiveView, live_view
from stampede.records import Api, LoadgenSampleRecord, RunRecord, RunStatus, StepRecord
from tests.unit.loadgen.test_live import RUN, T0, record

BASE_S = int(T0.timestamp())


class ListSink:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.flushed = False

    def add_request(self, r: Any) -> None:
        self.records.append(r)

    add_run = add_step = add_loadgen_sample = add_request

    def flush(self, timeout_s: float | None = None) -> bool:
        self.flushed = True
        return True


def started_view() -> tuple[Any, LiveView, ListSink]:
    environment = Environment(user_classes=[])
    environment.create_local_runner()
    inner = ListSink()
    sink = live_view(environment, inner)
    sink.add_run(RunRecord(id=RUN, name="r", status=RunStatus.RUNNING, started_at=T0))
    view: LiveView = sink._view
    assert view._ticker is not None
    view._ticker.kill()  # the test ticks by hand, at clock times of its own
    sink.add_step(StepRecord(run_id=RUN, target="sim", index=0, users=4, api=Api.OPENAI_CHAT, model="m",
                             base_url="http://sim", started_at=T0, warmup_s=2.0))  # fmt: skip
    return sink, view, inner


def shown(view: LiveView) -> dict[str, tuple[str, str]]:
    return {row["metric"]: (row["window"], row["step"]) for row in view.snapshot["rows"]}


def sample(at_s: float, cpu: float, lag: float, pid: int = 1) -> LoadgenSampleRecord:
    return LoadgenSampleRecord(run_id=RUN, target="sim", step_index=0, host="h", pid=pid,
                               sampled_at=T0 + timedelta(seconds=at_s), cpu_pct=cpu, loop_lag_ms=lag)  # fmt: skip


def test_the_tapped_sink_delivers_every_record_and_the_rest_of_the_sink() -> None:
    sink, _, inner = started_view()
    sink.add_request(record(1))
    sink.add_loadgen_sample(sample(1, 10, 1))
    assert len(inner.records) == 4  # run, step, request, sample
    assert sink.flush(1.0) and inner.flushed


def test_a_finished_request_is_folded_once_the_loop_is_idle_not_while_the_user_ends_it() -> None:
    sink, view, _ = started_view()
    busy = [gevent.spawn(gevent.sleep, 0) for _ in range(3)]  # other greenlets ready to run
    sink.add_request(record(3))
    assert not view.store.seconds.by_key  # queued: the user's greenlet goes on at once
    gevent.joinall(busy)
    gevent.sleep(0.01)  # the loop goes idle
    assert view.store.seconds.by_key
    sink.add_request(record(4))
    view.tick(BASE_S + 11)  # a tick folds what is still queued before it reads the figures
    assert shown(view)["Requests"] == ("2", "2")


def test_the_table_shows_the_window_and_the_step_without_its_warm_up() -> None:
    sink, view, _ = started_view()
    for i in range(10):
        sink.add_request(record(i, warmup=i < 2, tokens=5))  # ~0.2 s each
    for at in range(1, 11):
        sink.add_loadgen_sample(sample(at, 95.0, 2.0))
    view.tick(BASE_S + 11)
    table = shown(view)
    assert table["Requests"] == ("10", "8")
    assert table["Span"][0].endswith("(11.0 s)")  # the run is younger than the window
    assert table["Span"][1] == "step 0: 4 users, 9.0 s measured"
    assert table["Output tokens/s"] == (f"{50 / 11:,.1f}", f"{40 / 9:,.1f}")
    assert "saturated: YES" in table["Load generator"][0]  # CPU at 95 % in every second
    assert table["Errors by outcome"] == ("0", "0")


def test_a_masters_table_merges_worker_reports_and_shows_each_workers_health() -> None:
    _, view, _ = started_view()
    view.is_master, view.delay_s = True, MASTER_DELAY_S  # as a MasterRunner's view is
    for pid, cpu in ((11, 20.0), (12, 97.0)):
        slices = Slices()
        for i in range(5):
            slices.add(record(3 + i, ttft_ms=50.0 * pid / 11))
        health = {f"h:{pid}": [[BASE_S + s, cpu, 1.0] for s in range(1, 10)]}
        data = {"stampede_live": {"slices": slices.drain(), "health": health, "in_flight": 3}}
        view._merge_report(f"worker-{pid}", msgpack.loads(msgpack.dumps(data), strict_map_key=False))
    view.tick(BASE_S + 10 + MASTER_DELAY_S)
    table = shown(view)
    assert table["Requests"] == ("10", "10")
    assert table["Requests in flight (now)"][0] == "6"
    assert "saturated: no" in table["Worker h:11"][0] and "saturated: YES" in table["Worker h:12"][0]
