"""What the live view shows: the LLM tab's rows, the per-step table of the --html report, --csv and
--json-file, and the script that draws the charts (live in the web UI, from embedded data in a report).
"""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from loadgen.live import LATENCIES, RELATIVE_ERROR, figures
from loadgen.webui_charts import LIVE_SCRIPT
from stampede import registry
from stampede.metrics import PERCENTILES, generator_saturated

if TYPE_CHECKING:
    from loadgen.webui import LiveView

TAB_STRUCTURE = [
    {"key": "metric", "title": "Metric"},
    {"key": "window", "title": "Sliding window (the last 30 s)"},
    {"key": "step", "title": "Current step so far (warm-up excluded)"},
]
STEP_COLUMNS = [
    "target", "step", "from_s", "to_s", "users", "request_rate_per_s", "measured_s", "requests", "errors",
    "requests_per_s", "output_tokens_per_s", "output_tokens_per_s_per_request",
    *(f"{m.name}_p{p}" for m in LATENCIES for p in PERCENTILES),
    "reconnects", "late_chunks", "generator_saturated",
]  # fmt: skip
SAMPLE_INTERVAL_S = 1.0


def empty_snapshot() -> dict[str, Any]:
    return {"targets": [], "rows": []}


def _label(name: str) -> str:
    """A registry metric's header: ``Output tokens/s``."""
    return registry.get(name).header()


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(errors.items())) or "0"


def _health(samples: list[list[float]]) -> dict[str, Any]:
    cpu, lag = [s[1] for s in samples], [s[2] for s in samples]
    if not samples:
        return {"cpu_pct": None, "loop_lag_ms": None, "max_loop_lag_ms": None, "saturated": False}
    return {"cpu_pct": statistics.median(cpu), "loop_lag_ms": statistics.median(lag),
            "max_loop_lag_ms": max(lag), "saturated": generator_saturated(cpu, lag)}  # fmt: skip


def _health_text(h: dict[str, Any]) -> str:
    if h["cpu_pct"] is None:
        return "no samples"
    return (f"CPU {h['cpu_pct']:.0f} %, loop lag {h['loop_lag_ms']:.1f} ms (max {h['max_loop_lag_ms']:.1f}),"
            f" saturated: {'YES' if h['saturated'] else 'no'}")  # fmt: skip


def _samples(view: LiveView, start_s: float, end_s: float, process: str | None = None) -> list[list[float]]:
    return [s for p, samples in view.health.items() if process in (None, p) for s in samples if start_s <= s[0] < end_s]


def step_span(view: LiveView, index: int) -> tuple[int, int | None]:
    """The step's measured span in whole seconds: from the end of its warm-up to its end (None while
    it runs). The stored figures open it once the load holds; live, that is not known yet."""
    step = view.steps[index]
    start = math.ceil(step.started_at.timestamp() + step.warmup_s)
    return start, None if step.ended_at is None else max(start, math.floor(step.ended_at.timestamp()))


def _step_span(view: LiveView, index: int, end_s: float) -> tuple[float, float]:
    """The step's measured span so far, up to ``end_s``."""
    start, end = step_span(view, index)
    return start, max(start, end_s if end is None else min(end, end_s))


def _step_saturated(view: LiveView, index: int, end_s: float) -> bool:
    if index in view.saturated:
        return view.saturated[index]
    start, end = _step_span(view, index, end_s)
    return bool(_health(_samples(view, start + SAMPLE_INTERVAL_S, end + 1))["saturated"])


def settle_health(view: LiveView, end_s: int) -> None:
    """Freeze the verdict of each step that ended before ``end_s``, then drop the health samples that
    neither the window nor the current step still needs: memory stays bounded however long the run."""
    for index, step in view.steps.items():
        if index not in view.saturated and step.ended_at is not None and step.ended_at.timestamp() < end_s:
            view.saturated[index] = _step_saturated(view, index, end_s)
    keep_from: float = end_s - view.store.window_s
    current = max(view.steps) if view.steps else None
    if current is not None and current not in view.saturated:
        keep_from = min(keep_from, _step_span(view, current, end_s)[0])
    for process, samples in view.health.items():
        view.health[process] = [s for s in samples if s[0] >= keep_from]


def snapshot(view: LiveView, end_s: int) -> dict[str, Any]:
    """Every target's figures over the window ending ``end_s`` and over its current step, and the rows."""
    start_s = end_s - view.store.window_s
    window_s = end_s - max(start_s, view.run_started_s or start_s)
    current = max(view.steps) if view.steps else None
    targets = []
    for target in view.store.targets():
        entry: dict[str, Any] = {
            "target": target,
            "window": asdict(figures(view.store.window(target, end_s), window_s)),
        }
        entry["step"] = None
        if current is not None:
            measure_start, measure_end = _step_span(view, current, end_s)
            summary = view.store.step(target, current, step_span(view, current), end_s)
            entry["step"] = asdict(figures(summary, measure_end - measure_start))
            entry["step_health"] = _health(_samples(view, measure_start + SAMPLE_INTERVAL_S, measure_end + 1))
        targets.append(entry)
    out: dict[str, Any] = {"start_s": start_s, "end_s": end_s, "step": current, "targets": targets}
    out["window_health"] = _health(_samples(view, start_s, end_s + 1))
    out["workers"] = {p: _health(_samples(view, start_s, end_s + 1, p)) for p in sorted(view.health)}
    out["worker_steps"] = {}
    if current is not None:
        measure_start, measure_end = _step_span(view, current, end_s)
        span = (measure_start + SAMPLE_INTERVAL_S, measure_end + 1)
        out["worker_steps"] = {p: _health(_samples(view, *span, p)) for p in sorted(view.health)}
    out["rows"] = _rows(view, out)
    return out


def _rows(view: LiveView, snap: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[tuple[str, str, str]] = []
    in_flight = str(sum(view.in_flight.values()))
    window_text = f"{_clock(snap['start_s'])}–{_clock(snap['end_s'])} UTC"
    for t in snap["targets"]:
        w, s = t["window"], t["step"] or {}
        step = view.steps.get(snap["step"]) if snap["step"] is not None else None
        load = (
            ""
            if step is None
            else f"step {step.index}: "
            + (f"{step.request_rate_per_s:g} req/s" if step.request_rate_per_s else f"{step.users} users")
        )
        rows += [("Target", t["target"], t["target"]),
                 ("Span", f"{window_text} ({w['duration_s']:.1f} s)",
                  f"{load}, {s['duration_s']:.1f} s measured" if s else "no step"),
                 ("Requests in flight (now)", in_flight, in_flight),
                 (_label("requests"), str(w["requests"]), str(s.get("requests", ""))),
                 (f"{_label('requests_per_s')} (successful)", _num(w["requests_per_s"], 2),
                  _num(s.get("requests_per_s"), 2)),
                 (_label("output_tokens_per_s"), _num(w["output_tokens_per_s"]), _num(s.get("output_tokens_per_s"))),
                 ("Output tokens/s per request", _num(w["output_tokens_per_s_per_request"]),
                  _num(s.get("output_tokens_per_s_per_request")))]  # fmt: skip
        for m in LATENCIES:
            for p in PERCENTILES:
                rows.append((m.header(p), _num(w[m.name][f"p{p}"]), _num(s[m.name][f"p{p}"]) if s else ""))
        rows += [("Errors by outcome", _errors(w["errors"]), _errors(s["errors"]) if s else ""),
                 (_label("reconnects"), str(w["reconnects"]), str(s.get("reconnects", ""))),
                 (_label("late_chunks"), str(w["late_chunks"]), str(s.get("late_chunks", "")))]  # fmt: skip
        rows.append(("Load generator", _health_text(snap["window_health"]), _health_text(t.get("step_health", {}))
                     if s else ""))  # fmt: skip
    if len(snap["workers"]) > 1:
        for process, h in snap["workers"].items():
            step_health = snap["worker_steps"].get(process)
            rows.append((f"Worker {process}", _health_text(h), _health_text(step_health) if step_health else ""))
    rows.append(("Percentiles", f"log histogram, within {RELATIVE_ERROR:.0%} of exact", "same"))
    return [{"name": f"{i:04d}", "metric": m, "window": w, "step": s} for i, (m, w, s) in enumerate(rows)]


def step_dicts(view: LiveView) -> list[dict[str, Any]]:
    """One row per target and step: its figures over its measured window (so far, while it runs)."""
    end_s = math.floor(datetime.now(UTC).timestamp()) + 1
    out = []
    for target, index in ((t, i) for t in view.store.targets() for i in sorted(view.steps)):
        step = view.steps[index]
        start, end = _step_span(view, index, end_s)
        f = figures(view.store.step(target, index, step_span(view, index), end_s), end - start)
        row: dict[str, Any] = {"target": target, "step": index, "from_s": start, "to_s": end, "users": step.users,
                               "request_rate_per_s": step.request_rate_per_s, "measured_s": round(end - start, 3),
                               "requests": f.requests, "errors": sum(f.errors.values()),
                               "requests_per_s": f.requests_per_s, "output_tokens_per_s": f.output_tokens_per_s,
                               "output_tokens_per_s_per_request": f.output_tokens_per_s_per_request}  # fmt: skip
        for m in LATENCIES:
            pcts = getattr(f, m.name)
            row |= {f"{m.name}_p{p}": getattr(pcts, f"p{p}") for p in PERCENTILES}
        row |= {"reconnects": f.reconnects, "late_chunks": f.late_chunks}
        row["generator_saturated"] = _step_saturated(view, index, end_s)
        out.append(row)
    return out


def step_rows(view: LiveView) -> list[list[Any]]:
    return [[row[c] for c in STEP_COLUMNS] for row in step_dicts(view)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    return html.escape("–" if value is None else str(value))


def with_report_section(page: str, view: LiveView) -> str:
    """Locust's HTML report with the LLM table per step and the charts added at the end of its body."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in STEP_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in step_rows(view))
    data = orjson.dumps(view.charts()).decode().replace("</", "<\\/")
    section = (
        '<section id="stampede-llm" style="font-family:sans-serif;padding:16px;overflow-x:auto">'
        "<h2>LLM figures per step (Stampede)</h2>"
        "<p>Over each step's span after its warm-up, by when things happened; percentiles from log histograms, within "
        f"{RELATIVE_ERROR:.0%} of exact. Charts: over a sliding {view.store.window_s} s window.</p>"
        f'<table border="1" cellspacing="0" cellpadding="4"><tr>{head}</tr>{body}</table>'
        f'<div id="stampede-llm-charts"></div><script>window.STAMPEDE_LLM = {data};</script>'
        f"<script>{LIVE_SCRIPT}</script></section>"
    )
    at = page.rfind("</body>")
    return page + section if at < 0 else page[:at] + section + page[at:]
