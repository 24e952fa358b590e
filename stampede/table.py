"""The end-of-sweep summary as a plain-text table."""

from __future__ import annotations

from collections.abc import Sequence

from stampede import registry
from stampede.report import TargetStep

LEADING = (("target", "<"), ("step", ">"), ("load", ">"))
# The metric columns, in the table's order: (registry name, percentile or None).
FIGURES = (("mean_in_flight", None), ("requests_per_s", None), ("output_tokens_per_s", None))
SERVER = (("server_output_tokens_per_s", None), ("server_difference_pct", None))
LATENCY = (
    ("ttft_ms", 50), ("ttft_ms", 99), ("itl_ms", 50), ("itl_ms", 99), ("e2e_ms", 50), ("e2e_ms", 99),
    ("errors", None), ("reconnects", None),
)  # fmt: skip
GOODPUT = (("goodput_requests_per_s", None),)
NOTES = ("", "<")
SATURATED = "generator saturated"
LATE = "chunks read late"
TOO_SHORT = "too short for its requests"
LITTLE = "in flight ≠ completions/s × E2E"
NOT_REACHED = "planned load never held"
SERVER_DIFFERS = "differs from the server's count"
LOST = "lost"
INCOMPLETE = "incomplete"


def _cell(item: TargetStep, name: str, percentile: int | None) -> str:
    """A metric's cell, rounded to the registry's digits; errors read ``failed/completed``."""
    s, metric = item.summary, registry.get(name)
    if name == "errors":
        return f"{s.errors}/{s.requests}"
    value = getattr(s, name) if percentile is None else getattr(getattr(s, name), f"p{percentile}")
    if value is None:
        return "-"
    if metric.unit == "count" and isinstance(value, int):
        return str(value)
    return f"{value:+.{metric.digits}f}%" if metric.unit == "%" else f"{value:,.{metric.digits}f}"


def _load(item: TargetStep) -> str:
    if item.request_rate_per_s is not None:
        return f"{item.request_rate_per_s:g}/s"
    return str(item.summary.users)


def _notes(item: TargetStep) -> list[str]:
    s = item.summary
    notes = [SATURATED] if item.saturated else []
    if s.late_chunks:
        notes.append(f"{s.late_chunks:,} {LATE}")
    if s.too_short:
        notes.append(f"{TOO_SHORT}: lengthen to {s.lengthen_to_s:g} s")
    if s.little_mismatch:
        notes.append(f"{LITTLE} ({s.mean_in_flight:,.1f} vs {s.little_in_flight:,.1f})")
    if not s.load_reached:
        notes.append(NOT_REACHED)
    if s.server_disagrees:
        notes.append(SERVER_DIFFERS)
    if item.incomplete:
        notes.append(f"{INCOMPLETE}: {item.stored:,} of {item.produced:,} requests stored")
    if item.lost_workers:
        left = "" if item.users_left is None else f": {item.users_left} of {s.users} users left"
        notes.append(f"{LOST} {item.lost_workers} Locust worker(s) {item.lost_after_s or 0:.0f} s in{left}")
    return notes


def _figures(with_server: bool, with_goodput: bool) -> list[tuple[str, int | None]]:
    return [*FIGURES, *(SERVER if with_server else ()), *LATENCY, *(GOODPUT if with_goodput else ())]


def _row(item: TargetStep, figures: list[tuple[str, int | None]]) -> list[str]:
    row = [item.target, str(item.index), _load(item), *(_cell(item, name, p) for name, p in figures)]
    row.append("; ".join(_notes(item)))
    return row


def format_summary(steps: Sequence[TargetStep]) -> str:
    """Aligned table: one line per target and step; latencies in ms; load is users or requests/s."""
    with_goodput = any(step.summary.goodput_requests_per_s is not None for step in steps)
    with_server = any(step.summary.server_output_tokens_per_s is not None for step in steps)
    figures = _figures(with_server, with_goodput)
    columns = (*LEADING, *((registry.get(name).short(p), ">") for name, p in figures), NOTES)
    rows = [[name for name, _ in columns], *(_row(step, figures) for step in steps)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(rows):
        cells = [f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, columns, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    lines.append(
        "figures by arrival time inside each step's measured window (it opens once the load holds, plus the"
        " warm-up): tokens that arrived, requests that completed; latencies in ms; in flight = mean requests"
        " in flight measured; errors = failed/completed;"
        " reconnects = requests sent again because the server had closed their kept-alive connection"
    )
    if with_server:
        lines.append("server tok/s = the runtime's own output-token counter over the window; vs server = the"
                     " client's count over the same span, relative to it")  # fmt: skip
    notes = {note for step in steps for note in _notes(step)}
    if any(note.startswith(TOO_SHORT) for note in notes):
        lines.append(f"{TOO_SHORT}: fewer than {min(s.summary.min_completions for s in steps)} completions in the"
                     " window, or E2E p50 over a third of it; its figures depend on chance")  # fmt: skip
    if any(note.startswith(LITTLE) for note in notes):
        lines.append(f"{LITTLE}: Little's law does not hold over the window (over 10 % apart): too few"
                     " completions to describe the load, or requests missing")  # fmt: skip
    if NOT_REACHED in notes:
        lines.append(f"{NOT_REACHED}: the planned requests were never all in flight; the window opened by the clock")
    if SERVER_DIFFERS in notes:
        lines.append(f"{SERVER_DIFFERS}: client and runtime token counts over the window are over 5 % apart")
    if any(step.incomplete for step in steps):
        lines.append(f"{INCOMPLETE}: the load generators made more request records than the store holds yet: queued"
                     " for the workers, kept in a file by a Locust process (`stampede replay`), or given up on by"
                     " RQ (`stampede replay --failed`); the step's figures lack them")  # fmt: skip
    if any(step.lost_workers for step in steps):
        lines.append(f"{LOST} ... Locust worker(s): workers stopped reporting to the master during the step, which"
                     " carried on with the users left; the step's figures are for that smaller load")  # fmt: skip
    if any(step.saturated for step in steps):
        lines.append(f"{SATURATED}: the load generator ran out of CPU or its event loop lagged; see docs/metrics.md")
    if any(step.summary.late_chunks for step in steps):
        lines.append(f"{LATE}: read with bytes that came after them, so timed up to their arrival; see docs/metrics.md")
    return "\n".join(lines)
