"""The LLM figures in Locust's own web UI, its --html report and its --csv files, live.

:func:`live_view` wraps the run's sink: every record the run stores passes through it, so the tab's
figures come from the stored records themselves (requests, steps, load-generator health). A worker
adds its requests to per-second :class:`~loadgen.live.Slices` and ships them with Locust's worker
report (``events.report_to_master``); the master, or a single process, adds them into a
:class:`~loadgen.live.LiveStore` and every ``TICK_S`` recomputes the table (:mod:`loadgen.webui_view`).

The tab uses Locust's extension points: ``extended_tabs``/``extended_tables``/``extended_csv_files``
template arguments, an ``extended_stats`` block added to ``/stats/requests``, and routes on
``environment.web_ui.app``. Locust's tab shows a table only, so the charts are drawn by a script the
index page loads from one of those routes.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import gevent
import orjson
from flask import Blueprint, Response, request
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen import webui_view
from loadgen.live import LiveStore, Slices
from stampede.records import LoadgenSampleRecord, RequestRecord, RunRecord, StepRecord

log = logging.getLogger(__name__)

WINDOW_S = 30
TICK_S = 2.0
MASTER_DELAY_S = 4
"""The master's window ends this long ago: workers report every 3 s (Locust's WORKER_REPORT_INTERVAL)."""
HISTORY_POINTS = 3600
FOLD_LAG_S = 1.0
"""A record waits at most about this long for an idle loop before it is folded anyway (see
:meth:`LiveView.on_request`)."""
REPORT_KEY = "stampede_live"
TAB_KEY = "llm"


class TappedSink:
    """The run's sink, with each record also handed to the live view; everything else is the sink's."""

    def __init__(self, sink: Any, view: LiveView) -> None:
        self._sink = sink
        self._view = view

    def add_request(self, record: RequestRecord) -> None:
        self._sink.add_request(record)
        self._view.on_request(record)

    def add_run(self, run: RunRecord) -> None:
        self._sink.add_run(run)
        self._view.on_run(run)

    def add_step(self, step: StepRecord) -> None:
        self._sink.add_step(step)
        self._view.steps[step.index] = step

    def add_loadgen_sample(self, sample: LoadgenSampleRecord) -> None:
        self._sink.add_loadgen_sample(sample)
        self._view.on_health(f"{sample.host}:{sample.pid}", [sample.sampled_at.timestamp(), sample.cpu_pct,
                                                              sample.loop_lag_ms])  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)


def live_view(environment: Environment, sink: Any) -> Any:
    """Show the run's LLM figures in Locust's outputs; returns ``sink`` tapped for them (as it is with
    ``--no-live-figures``)."""
    if getattr(environment.parsed_options, "no_live_figures", False):
        return sink
    return TappedSink(sink, LiveView(environment))


class LiveView:
    """One process's side of the live figures: a worker's slices, or the coordinator's store and table."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.is_worker = isinstance(environment.runner, WorkerRunner)
        self.is_master = isinstance(environment.runner, MasterRunner)
        self.delay_s = MASTER_DELAY_S if self.is_master else 0
        self.pending = Slices()
        self.store = LiveStore(WINDOW_S)
        self.steps: dict[int, StepRecord] = {}
        self.health: dict[str, list[list[float]]] = {}
        """(sampled at, CPU %, loop lag ms) per process ``host:pid``, this run's."""
        self.saturated: dict[int, bool] = {}
        """The saturation verdict of each step that has ended, frozen when its samples can be dropped."""
        self.in_flight: dict[str, int] = {}
        self.run_started_s: float | None = None
        self.history: deque[list[Any]] = deque(maxlen=HISTORY_POINTS)
        self.snapshot: dict[str, Any] = webui_view.empty_snapshot()
        self._ticker: gevent.Greenlet | None = None
        self._unfolded: deque[tuple[float, RequestRecord]] = deque()
        self._folder: gevent.Greenlet | None = None
        events = environment.events
        if self.is_worker:
            events.report_to_master.add_listener(self._report)
            return
        events.worker_report.add_listener(self._merge_report)
        events.reset_stats.add_listener(self._reset)
        events.quitting.add_listener(self._write_outputs)
        if environment.web_ui is not None:
            self._extend_web_ui(environment.web_ui)

    # Records, from the tapped sink

    def on_request(self, record: RequestRecord) -> None:
        """Queue a finished request for the figures: they are folded in while the event loop is idle.

        Folding one takes about 0.1 ms. Done at once, a wave of requests ending together held every
        stream's next read for their sum, and chunks were stamped late (docs/benchmarks.md, "The LLM
        tab's cost"). A record still unfolded after ``FOLD_LAG_S`` (a loop never idle) is folded anyway,
        one per turn of the loop.
        """
        self._unfolded.append((time.monotonic(), record))
        if self._folder is None or self._folder.dead:
            self._folder = gevent.spawn(self._fold_when_idle)

    def _fold_when_idle(self) -> None:
        while self._unfolded:
            if time.monotonic() - self._unfolded[0][0] < FOLD_LAG_S:
                gevent.idle()
            else:
                gevent.sleep(0)
            self._fold_next()

    def fold_all(self) -> None:
        """Fold every queued record now: before figures are read or shipped."""
        while self._unfolded:
            self._fold_next()

    def _fold_next(self) -> None:
        if self._unfolded:  # another greenlet may have folded it meanwhile
            record = self._unfolded.popleft()[1]
            (self.pending if self.is_worker else self.store).add(record)

    def on_run(self, run: RunRecord) -> None:
        if self.run_started_s is None or run.started_at.timestamp() > self.run_started_s:
            self.run_started_s = run.started_at.timestamp()
            self._reset()
            self.steps, self.saturated = {}, {}
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick_forever)

    def on_health(self, process: str, sample: list[float]) -> None:
        self.health.setdefault(process, []).append(sample)

    # Worker reports

    def _report(self, client_id: str, data: dict[str, Any]) -> None:
        self.fold_all()  # a worker's last report carries every request it finished
        samples = {p: s for p, s in self.health.items() if s}
        data[REPORT_KEY] = {"slices": self.pending.drain(), "health": samples, "in_flight": self._users_in_flight()}
        self.health = {}

    def _merge_report(self, client_id: str, data: dict[str, Any]) -> None:
        report = data.get(REPORT_KEY)
        if report is None:
            return
        self.store.merge_wire(report["slices"])
        for process, samples in report["health"].items():
            self.health.setdefault(process, []).extend(samples)
        self.in_flight[client_id] = int(report["in_flight"])

    def _users_in_flight(self) -> int:
        """Users inside a request: Locust marks a user "running" in a task and "waiting" in its pause."""
        runner = self.environment.runner
        if runner is None:
            return 0
        states = (getattr(g.args[0], "_state", None) for g in runner.user_greenlets if g.args)
        return sum(state in ("running", "stopping") for state in states)

    # The coordinator's table

    def _reset(self) -> None:
        self._unfolded.clear()
        self.store.clear()
        self.history.clear()

    def _tick_forever(self) -> None:
        while True:
            while self._unfolded:  # what ended before this tick, folded a record per turn of the loop
                gevent.sleep(0)
                self._fold_next()
            gevent.idle()
            self.tick(time.time())
            gevent.sleep(TICK_S)

    def tick(self, now_s: float) -> None:
        """Recompute the table for the window ending ``delay_s`` before ``now_s``; add a chart point."""
        end_s = math.floor(now_s) - self.delay_s
        self.fold_all()
        self.store.prune(end_s, {index: webui_view.step_span(self, index) for index in self.steps})
        webui_view.settle_health(self, end_s)
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):  # a worker that has gone has nothing in flight
            self.in_flight = {w: n for w, n in self.in_flight.items() if w in runner.clients}
        elif not self.is_master:
            self.in_flight = {"local": self._users_in_flight()}
        self.snapshot = webui_view.snapshot(self, end_s)
        for target in self.snapshot["targets"]:
            window = target["window"]
            self.history.append([end_s, target["target"], window["ttft_ms"]["p50"], window["ttft_ms"]["p99"],
                                 window["output_tokens_per_s"]])  # fmt: skip

    def charts(self) -> dict[str, Any]:
        steps = [[s.started_at.timestamp(), s.index] for s in sorted(self.steps.values(), key=lambda s: s.index)]
        return {"points": list(self.history), "steps": steps, "window_s": WINDOW_S}

    def step_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(webui_view.STEP_COLUMNS)
        writer.writerows(webui_view.step_rows(self))
        return out.getvalue()

    # Locust's outputs

    def _extend_web_ui(self, web_ui: Any) -> None:
        web_ui.template_args |= {
            "extended_tabs": [{"title": "LLM", "key": TAB_KEY}],
            "extended_tables": [{"key": TAB_KEY, "structure": webui_view.TAB_STRUCTURE}],
            "extended_csv_files": [{"href": "./stampede/llm.csv", "title": "Download LLM figures per step CSV"}],
        }
        base = (self.environment.parsed_options.web_base_path or "") if self.environment.parsed_options else ""
        routes = Blueprint("stampede_live", __name__, url_prefix=f"{base}/stampede")

        @routes.route("/llm.json")
        @web_ui.auth_required_if_enabled
        def llm_json() -> Response:
            body = {"table": self.snapshot["rows"], **self.charts()}
            return Response(orjson.dumps(body), mimetype="application/json")

        @routes.route("/llm.js")
        @web_ui.auth_required_if_enabled
        def llm_js() -> Response:
            return Response(webui_view.LIVE_SCRIPT, mimetype="application/javascript")

        @routes.route("/llm.csv")
        @web_ui.auth_required_if_enabled
        def llm_csv() -> Response:
            response = Response(self.step_csv(), mimetype="text/csv")
            response.headers["Content-Disposition"] = "attachment;filename=stampede_llm_steps.csv"
            return response

        web_ui.app.register_blueprint(routes)
        web_ui.app.after_request(self._extend_response)

    def _extend_response(self, response: Response) -> Response:
        path = request.path.rstrip("/")
        if path.endswith("/stats/requests") and response.is_json:
            extended = [{"key": TAB_KEY, "data": self.snapshot["rows"]}]
            response.set_data(orjson.dumps({**response.get_json(), "extended_stats": extended}))
        elif path.endswith("/stats/report") and response.mimetype == "text/html":
            response.set_data(webui_view.with_report_section(response.get_data(as_text=True), self))
        elif request.endpoint == "locust.index" and response.mimetype == "text/html":
            script = '<script src="./stampede/llm.js" defer></script></body>'
            response.set_data(response.get_data(as_text=True).replace("</body>", script, 1))
        return response

    def _write_outputs(self, environment: Environment, **_: Any) -> None:
        """Add the LLM figures to what ``--html``, ``--csv`` and ``--json-file`` wrote (Locust has no
        hook into those files: the report is written before ``quitting`` fires, so it is amended)."""
        if self._ticker is not None:
            self._ticker.kill()
        self.tick(time.time() + self.delay_s)  # the last reports are in: count every second
        opts = environment.parsed_options
        if opts is None:
            return
        if opts.html_file and Path(opts.html_file).is_file():
            path = Path(opts.html_file)
            path.write_text(webui_view.with_report_section(path.read_text(encoding="utf-8"), self), encoding="utf-8")
        if opts.csv_prefix:
            Path(f"{opts.csv_prefix}_llm.csv").write_text(self.step_csv(), encoding="utf-8")
        if opts.json_file:
            Path(f"{opts.json_file}_llm.json").write_bytes(orjson.dumps(webui_view.step_dicts(self)))
