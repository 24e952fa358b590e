"""The metric registry: each metric Stampede reports, declared once, its metadata beside its formula.

A :class:`Metric` holds its name (which ends in its unit), its unit, its label for people, the
abbreviation the CLI table heads it with, its formula as the docs print it, which way is better, the
percentiles reported of it and what computes it: a function of :mod:`stampede.metrics` for a
per-request figure (its step percentiles are :mod:`stampede.summary`'s), the
:class:`stampede.summary.StepSummary` field of the same name for a step's. The CLI table, ``report``,
the regression check, the dashboard and the live view read their labels, units and columns here, and
docs/metrics.md's tables are generated from it (``python -m stampede.registry``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from stampede import metrics
from stampede.metrics import MODEL_LOAD_MIN_MS, PERCENTILES


class Direction(str, Enum):
    """Which way a metric is better."""

    HIGHER = "higher"
    LOWER = "lower"
    NEITHER = "neither"
    """A figure that describes the load rather than rates it (requests in flight)."""


class Scope(str, Enum):
    """What a metric is a figure of: one request (summarised per step by percentiles), or a step."""

    REQUEST = "request"
    STEP = "step"


# The suffix each unit gives a name; counts carry the thing counted in the name instead.
UNIT_SUFFIXES = {"ms": "_ms", "/s": "_per_s", "%": "_pct", "share": "_rate", "count": ""}


@dataclass(frozen=True)
class Metric:
    """One metric: its metadata and what computes it."""

    name: str
    unit: str
    label: str
    """For people, without its unit: ``TTFT``, ``Output tokens``."""
    formula: str
    direction: Direction
    scope: Scope
    abbrev: str = ""
    """The CLI table's header (``out tok/s``); the label where empty."""
    percentiles: tuple[int, ...] = ()
    """Percentiles a step reports of a per-request figure (its columns ``<base>_p<N>_ms``)."""
    computed_by: Callable[..., Any] | None = None
    """The per-request function of :mod:`stampede.metrics`; a step figure is the summary's field."""
    digits: int = 1
    """Decimals the CLI table shows."""
    regression: bool = False
    """Compared with the baseline's: a fall (higher is better) or a p99 rise (lower) is a finding."""
    notes: str = ""
    """Said beside the formula in docs/metrics.md."""
    hover: str | None = None
    """What the dashboard's column header says when hovered, where the label cannot say it all."""

    @property
    def base(self) -> str:
        """The name without its unit suffix: ``ttft`` for ``ttft_ms``."""
        return self.name.removesuffix(UNIT_SUFFIXES[self.unit]) if UNIT_SUFFIXES[self.unit] else self.name

    def column(self, percentile: int) -> str:
        """A step row's column for one percentile: ``ttft_p99_ms``."""
        return f"{self.base}_p{percentile}{UNIT_SUFFIXES[self.unit]}"

    def columns(self) -> list[str]:
        """The step row's columns of this metric: one per percentile, else its name."""
        return [self.column(p) for p in self.percentiles] if self.percentiles else [self.name]

    def header(self, percentile: int | None = None) -> str:
        """Its label with the percentile and unit, as tables head it: ``TTFT p99 (ms)``, ``Output tokens/s``."""
        text = self.label if percentile is None else f"{self.label} p{percentile}"
        if self.unit == "/s":
            return f"{text}/s"
        return f"{text} ({self.unit})" if self.unit in ("ms", "%") else text

    def short(self, percentile: int | None = None) -> str:
        """The CLI table's header: ``out tok/s``, ``TTFT p99``."""
        text = self.abbrev or self.label
        return text if percentile is None else f"{text} p{percentile}"


def _latency(name: str, label: str, formula: str, computed_by: Callable[..., Any], **kw: Any) -> Metric:
    return Metric(name, "ms", label, formula, Direction.LOWER, Scope.REQUEST, percentiles=PERCENTILES,
                  computed_by=computed_by, **kw)  # fmt: skip


def _step(name: str, unit: str, label: str, formula: str, direction: Direction, **kw: Any) -> Metric:
    return Metric(name, unit, label, formula, direction, Scope.STEP, **kw)


H, L, N = Direction.HIGHER, Direction.LOWER, Direction.NEITHER

LATENCIES = (
    _latency(
        "ttft_ms",
        "TTFT",
        "`t(first output chunk) - t(send)`",
        metrics.ttft_ms,
        regression=True,
        notes="A chunk counts as output when it carries content or reasoning text; role-only and empty deltas do"
        " not. Left out of a step's percentiles for a request that waited for a model load.",
    ),
    _latency(
        "itl_ms",
        "ITL",
        "`(t(chunk i) - t(chunk i-1)) / tokens in chunk i`, for i ≥ 1",
        metrics.itl_ms,
        regression=True,
        notes="Each gap of a request is one value. Tokens per chunk come from the client tokenizer"
        " (`--tokenizer`) when one is named; otherwise each chunk counts as one token.",
    ),
    _latency(
        "tpot_ms",
        "TPOT",
        "`(E2E - TTFT) / (output tokens - 1)`",
        metrics.tpot_ms,
        notes="Undefined (empty) below two output tokens.",
    ),
    _latency("e2e_ms", "E2E", "`t(last byte of the response) - t(send)`", metrics.e2e_ms, regression=True),
    _latency(
        "response_ms",
        "Response",
        "`E2E + (t(actual send) - t(intended send))`",
        metrics.response_ms,
        notes="Equals E2E in closed loop. In open loop a send that was due while every user was busy is late, and"
        " the delay counts: coordinated omission cannot hide a slow server.",
    ),
    _latency(
        "network_and_queue_ms",
        "Network and queue",
        "`E2E - server total`",
        metrics.network_and_queue_ms,
        notes="Where the runtime reports its own total (Ollama `total_duration`). The server's split (`load_ms`,"
        " `prompt_eval_ms`, `eval_ms`, `total_ms`) is stored per request as `server_timings_ms`.",
    ),
)

REQUEST_FIGURES = (
    Metric(
        "output_tokens", "count", "Output tokens", "server count, else client tokenizer count, else chunks seen",
        H, Scope.REQUEST, computed_by=metrics.output_token_count,
        notes="Server counts: OpenAI `usage.completion_tokens` (asked for with `stream_options.include_usage`;"
        " llama.cpp and vLLM both send it), Ollama `eval_count`. The client tokenizer count is stored beside it"
        " (`client_output_tokens`). Characters are never counted as tokens.",
    ),
    Metric(
        "tokens_disagree", "count", "Tokens disagree",
        "server count ≠ tokenizer count; without a tokenizer, chunks seen > server count", L, Scope.REQUEST,
        computed_by=metrics.tokens_disagree,
        notes="Fewer chunks than tokens is normal (a chunk may carry several tokens). The step summary counts"
        " such requests (`token_disagreements`).",
    ),
    Metric(
        "load_ms", "ms", "Model load", f"server `load_ms` ≥ {MODEL_LOAD_MIN_MS:g} ms is a model load", L,
        Scope.REQUEST, notes="Such requests are counted as model loads and left out of TTFT percentiles, so a cold"
        " start shows as a load, not a slow TTFT.",
    ),
)  # fmt: skip

STEP_FIGURES = (
    _step("requests", "count", "Requests", "completions: requests that ended in the window, not `cancelled`", H),
    _step("errors", "count", "Errors", "failed completions", L, abbrev="errors"),
    _step("error_rate", "share", "Error rate", "failed completions / completions", L),
    _step("requests_per_s", "/s", "Requests", "successful completions / `measured_s`", H, abbrev="req/s",
          digits=2),
    _step(
        "output_tokens_per_s", "/s", "Output tokens",
        "Σ tokens of the chunks that arrived in the window (any request, any outcome) / `measured_s`", H,
        abbrev="out tok/s", regression=True,
    ),
    _step(
        "server_output_tokens_per_s", "/s", "Server output tokens",
        "the runtime's own counter's increase over the scrapes inside the window / their span", N,
        abbrev="server tok/s",
    ),
    _step(
        "server_difference_pct", "%", "Server difference",
        "`100 × (checked / server − 1)`: the client's tokens that arrived in the scrapes' span / the span, against"
        " `server_output_tokens_per_s`", N, abbrev="vs server",
    ),
    _step(
        "total_tokens_per_s", "/s", "Total tokens",
        "(output tokens as above + prompt tokens of successful requests whose first output arrived in the window)"
        " / `measured_s`", H,
    ),
    _step(
        "goodput_requests_per_s", "/s", "Goodput requests",
        "successful completions meeting every SLO set (TTFT, TPOT, E2E limits) / `measured_s`", H,
        abbrev="goodput/s", digits=2,
    ),
    _step("model_loads", "count", "Model loads", "successful completions that waited for a model load", N),
    _step("token_disagreements", "count", "Token disagreements", "successful completions whose `tokens_disagree`", L),
    _step(
        "late_chunks", "count", "Late chunks",
        "Σ chunks of successful completions whose read also took bytes that came after them (timed up to those"
        " bytes' arrival; see above)", L,
        hover="Output chunks read together with bytes that came after them (docs/metrics.md)",
    ),
    _step(
        "reconnects", "count", "Reconnects",
        "completions of any outcome sent again on a new connection after their reused one was found closed", L,
        abbrev="reconnects",
    ),
    _step(
        "mean_in_flight", "count", "Mean in flight",
        "Σ over requests of the time each was in flight inside the window (send to end) / `measured_s`: the"
        " concurrency measured, shown beside the planned load", N, abbrev="in flight",
    ),
    _step(
        "little_in_flight", "count", "Little in flight",
        "Little's law: completions/s × mean E2E of those completions; marked when more than 10 % from"
        " `mean_in_flight` (too few completions to describe the load, or requests missing)", N,
    ),
)  # fmt: skip

METRICS: dict[str, Metric] = {m.name: m for m in (*LATENCIES, *REQUEST_FIGURES, *STEP_FIGURES)}
"""Every metric by name."""


def get(name: str) -> Metric:
    """The metric ``name`` (a KeyError names a metric nobody declared)."""
    return METRICS[name]


COLUMNS: dict[str, tuple[Metric, int | None]] = {
    **{m.name: (m, None) for m in METRICS.values()},
    **{m.column(p): (m, p) for m in LATENCIES for p in m.percentiles},
}
"""Every column a metric gives (its name; a percentile's column), with the metric and percentile."""


def header(column: str) -> str | None:
    """How tables head a metric's column (``TTFT p99 (ms)``); None for a column no metric gives."""
    found = COLUMNS.get(column)
    return None if found is None else found[0].header(found[1])


# --- docs/metrics.md's tables -----------------------------------------------------------------------
DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
_TABLES: dict[str, tuple[str, Sequence[Metric]]] = {
    "request": ("| metric | formula | notes |\n|---|---|---|", (*LATENCIES, *REQUEST_FIGURES)),
    "step": ("| metric | formula |\n|---|---|", STEP_FIGURES),
}


def docs_table(kind: str) -> str:
    """A markdown table of the registry's ``kind`` (``request`` or ``step``) metrics."""
    head, items = _TABLES[kind]
    cells = [[f"`{m.name}`", m.formula, *([m.notes] if kind == "request" else [])] for m in items]
    rows = [f"| {' | '.join(row)} |".replace("|  |", "| |") for row in cells]
    return "\n".join([head, *rows])


def with_docs_tables(text: str) -> str:
    """``text`` (docs/metrics.md) with each table between ``<!-- registry:KIND -->`` and
    ``<!-- /registry:KIND -->`` generated again from the registry."""
    for kind in _TABLES:
        start, end = f"<!-- registry:{kind} -->", f"<!-- /registry:{kind} -->"
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = f"{before}{start}\n{docs_table(kind)}\n{end}{after}"
    return text


if __name__ == "__main__":  # python -m stampede.registry: write docs/metrics.md's tables again
    DOCS.write_text(with_docs_tables(DOCS.read_text()))
    sys.exit(0)
