"""The end-of-sweep summary as a plain-text table."""

from __future__ import annotations

from collections.abc import Sequence

from stampede.report import TargetStep

COLUMNS = (
    ("target", "<"), ("step", ">"), ("load", ">"), ("req/s", ">"), ("out tok/s", ">"),
    ("TTFT p50", ">"), ("TTFT p99", ">"), ("ITL p50", ">"), ("ITL p99", ">"),
    ("E2E p50", ">"), ("E2E p99", ">"), ("errors", ">"), ("reconnects", ">"),
)  # fmt: skip
GOODPUT = ("goodput/s", ">")
NOTES = ("", "<")
SATURATED = "generator saturated"
LATE = "chunks read late"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _load(item: TargetStep) -> str:
    if item.request_rate_per_s is not None:
        return f"{item.request_rate_per_s:g}/s"
    return str(item.summary.users)


def _row(item: TargetStep, with_goodput: bool) -> list[str]:
    s = item.summary
    row = [
        item.target,
        str(item.index),
        _load(item),
        f"{s.requests_per_s:,.2f}",
        f"{s.output_tokens_per_s:,.1f}",
        _ms(s.ttft_ms.p50),
        _ms(s.ttft_ms.p99),
        _ms(s.itl_ms.p50),
        _ms(s.itl_ms.p99),
        _ms(s.e2e_ms.p50),
        _ms(s.e2e_ms.p99),
        f"{s.errors}/{s.requests}",
        str(s.reconnects),
    ]
    if with_goodput:
        row.append("-" if s.goodput_requests_per_s is None else f"{s.goodput_requests_per_s:,.2f}")
    notes = [SATURATED] if item.saturated else []
    if s.late_chunks:
        notes.append(f"{s.late_chunks:,} {LATE}")
    row.append("; ".join(notes))
    return row


def format_summary(steps: Sequence[TargetStep]) -> str:
    """Aligned table: one line per target and step; latencies in ms; load is users or requests/s."""
    with_goodput = any(step.summary.goodput_requests_per_s is not None for step in steps)
    columns = (*COLUMNS, GOODPUT, NOTES) if with_goodput else (*COLUMNS, NOTES)
    rows = [[name for name, _ in columns], *(_row(step, with_goodput) for step in steps)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(rows):
        cells = [f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, columns, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    lines.append(
        "latencies in ms over each step's measured window (warm-up excluded); errors = failed/sent;"
        " reconnects = requests sent again because the server had closed their kept-alive connection"
    )
    if any(step.saturated for step in steps):
        lines.append(f"{SATURATED}: the load generator ran out of CPU or its event loop lagged; see docs/metrics.md")
    if any(step.summary.late_chunks for step in steps):
        lines.append(f"{LATE}: read with bytes that came after them, so timed up to their arrival; see docs/metrics.md")
    return "\n".join(lines)
