"""The end-of-sweep summary as a plain-text table."""

from __future__ import annotations

from collections.abc import Sequence

from stampede.report import TargetStep

COLUMNS = (
    ("target", "<"), ("step", ">"), ("users", ">"), ("req/s", ">"), ("out tok/s", ">"),
    ("TTFT p50", ">"), ("TTFT p99", ">"), ("ITL p50", ">"), ("ITL p99", ">"),
    ("E2E p50", ">"), ("E2E p99", ">"), ("errors", ">"),
)  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _row(item: TargetStep) -> list[str]:
    s = item.summary
    return [
        item.target,
        str(item.index),
        str(s.users),
        f"{s.requests_per_s:,.2f}",
        f"{s.output_tokens_per_s:,.1f}",
        _ms(s.ttft_ms.p50),
        _ms(s.ttft_ms.p99),
        _ms(s.itl_ms.p50),
        _ms(s.itl_ms.p99),
        _ms(s.e2e_ms.p50),
        _ms(s.e2e_ms.p99),
        f"{s.errors}/{s.requests}",
    ]


def format_summary(steps: Sequence[TargetStep]) -> str:
    """Aligned table: one line per target and step; latencies in ms."""
    rows = [[name for name, _ in COLUMNS], *(_row(step) for step in steps)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, COLUMNS, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("latencies in ms over each step's measured window (warm-up excluded); errors = failed/sent")
    return "\n".join(lines)
