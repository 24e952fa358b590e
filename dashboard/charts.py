"""Plotly figures from data frames: one colour per target, no I/O.

Figures carry their meaning in trace names, which the tests read: ``"<target>"`` for a target's line,
``"<target> p90"`` for a percentile, ``"<target> goodput"``, ``"<target> knee"`` and
``"<target> saturated"`` for the markers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from stampede import counters, registry
from stampede.counters import Scrape
from stampede.registry import Metric

DASH_BY_PERCENTILE = {50: "solid", 90: "dash", 99: "dot"}
BAND_COLORS = ("rgba(120,120,120,0.10)", "rgba(120,120,120,0.22)")


def target_colors(targets: list[str]) -> dict[str, str]:
    """A stable colour per target, so a target looks the same in every chart of a page."""
    palette = qualitative.Plotly
    return {t: palette[i % len(palette)] for i, t in enumerate(sorted(targets))}


def load_title(frame: pd.DataFrame) -> str:
    """The load axis: request rate for open-loop runs, concurrency otherwise."""
    open_loop = "request_rate_per_s" in frame and frame["request_rate_per_s"].notna().any()
    return "Request rate (requests/s)" if open_loop else "Concurrent users"


def _markers(
    fig: go.Figure, frame: pd.DataFrame, column: str, knees: Mapping[str, float | None], colors: dict[str, str]
) -> None:
    for target, rows in frame.groupby("target", sort=True):
        color = colors[str(target)]
        busy = rows[rows["saturated"]]
        if len(busy):
            fig.add_trace(
                go.Scatter(
                    x=busy["load"], y=busy[column], name=f"{target} saturated", mode="markers",
                    marker={"symbol": "x-thin-open", "size": 16, "color": "crimson", "line": {"width": 3}},
                    hovertemplate="load generator saturated<extra></extra>",
                )
            )  # fmt: skip
        knee = knees.get(str(target))
        if knee is not None:
            at = rows[rows["load"] == knee]
            fig.add_trace(
                go.Scatter(
                    x=at["load"], y=at[column], name=f"{target} knee", mode="markers",
                    marker={"symbol": "star", "size": 16, "color": color, "line": {"width": 1, "color": "black"}},
                    hovertemplate="knee: highest load meeting the SLOs<extra></extra>",
                )
            )  # fmt: skip


def by_load(
    frame: pd.DataFrame,
    columns: Mapping[str, str],
    title: str,
    y_title: str,
    knees: Mapping[str, float | None],
) -> go.Figure:
    """Columns against load, one colour per target (``columns`` maps a column to a trace-name suffix,
    ``""`` for the main line, drawn solid; others dashed), with knee and saturation markers on the main one."""
    colors = target_colors(list(frame["target"].unique()))
    fig = go.Figure()
    for target, rows in frame.groupby("target", sort=True):
        rows = rows.sort_values("load")
        for column, suffix in columns.items():
            fig.add_trace(
                go.Scatter(
                    x=rows["load"], y=rows[column], name=f"{target} {suffix}".strip(), legendgroup=str(target),
                    mode="lines+markers", line={"color": colors[str(target)], "dash": "dash" if suffix else "solid"},
                )
            )  # fmt: skip
    _markers(fig, frame, next(iter(columns)), knees, colors)
    fig.update_layout(title=title, xaxis_title=load_title(frame), yaxis_title=y_title, legend_title="Target")
    return fig


def latency_by_load(
    frame: pd.DataFrame, metric: Metric, knees: Mapping[str, float | None], limit: float | None
) -> go.Figure:
    """A latency's percentiles against load: colour per target, dash per percentile; the SLO limit as a line."""
    colors = target_colors(list(frame["target"].unique()))
    fig = go.Figure()
    for target, rows in frame.groupby("target", sort=True):
        rows = rows.sort_values("load")
        for p in metric.percentiles:
            fig.add_trace(
                go.Scatter(
                    x=rows["load"], y=rows[metric.column(p)], name=f"{target} p{p}", legendgroup=str(target),
                    mode="lines+markers", line={"color": colors[str(target)], "dash": DASH_BY_PERCENTILE[p]},
                )
            )  # fmt: skip
    _markers(fig, frame, metric.column(99), knees, colors)
    if limit is not None:
        fig.add_hline(
            y=limit, line={"color": "crimson", "dash": "dot"}, annotation_text=f"SLO p99 {limit:g} {metric.unit}"
        )
    fig.update_layout(
        title=f"{metric.label} vs load", xaxis_title=load_title(frame), yaxis_title=metric.header(),
        legend_title="Target, pct",
    )  # fmt: skip
    return fig


def over_time(
    frame: pd.DataFrame, y: str, group: list[str], title: str, y_title: str, steps: pd.DataFrame
) -> go.Figure:
    """``y`` over ``sampled_at``, one line per ``group`` value, with the run's load steps as shaded bands."""
    fig = go.Figure()
    for key, rows in frame.groupby(group, sort=True):
        name = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        fig.add_trace(go.Scatter(x=rows["sampled_at"], y=rows[y], name=name, mode="lines"))
    step_bands(fig, steps)
    fig.update_layout(title=title, xaxis_title="Time (UTC)", yaxis_title=y_title)
    return fig


def counter_rates(frame: pd.DataFrame, metric: str, per: str | None = None) -> pd.DataFrame:
    """:func:`stampede.counters.counter_rates` over scraped values (``target``, ``host``, ``sampled_at``,
    ``metric``, ``labels``, ``value``), as a frame of ``target``, ``host``, ``sampled_at``, ``value``."""
    scrapes = (
        Scrape(str(r.target), str(r.host), r.sampled_at, str(r.metric), r.labels, float(r.value))
        for r in frame[["target", "host", "sampled_at", "metric", "labels", "value"]].itertuples(index=False)
    )
    rates = counters.counter_rates(scrapes, metric, per)
    return pd.DataFrame([asdict(r) for r in rates], columns=["target", "host", "sampled_at", "value"])


def gauge_lines(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (scraped values) with a ``line`` column naming each series to draw: the metric, and the
    labels that tell its series apart where a target has several (vLLM's engines, two runtimes)."""

    def line(rows: pd.DataFrame) -> pd.Series:
        labels = [labels if isinstance(labels, dict) else {} for labels in rows["labels"]]
        keys = sorted({key for item in labels for key in item})
        varying = [key for key in keys if len({str(item.get(key)) for item in labels}) > 1]
        if not varying:
            return pd.Series(rows["metric"].to_numpy(), index=rows.index)
        names = [
            f"{metric} ({', '.join(f'{key}={item.get(key)}' for key in varying)})"
            for metric, item in zip(rows["metric"], labels, strict=True)
        ]
        return pd.Series(names, index=rows.index)

    if frame.empty:
        return frame.assign(line=pd.Series(dtype=str))
    lines = [line(rows) for _, rows in frame.groupby(["target", "metric"], sort=False)]
    return frame.assign(line=pd.concat(lines))


def step_bands(fig: go.Figure, steps: pd.DataFrame) -> None:
    """Shade each load step behind the data, labelled with its load."""
    spans = steps.dropna(subset=["ended_at"]).groupby("index").agg(
        started_at=("started_at", "min"), ended_at=("ended_at", "max"), users=("users", "max"),
        rate=("request_rate_per_s", "max"),
    )  # fmt: skip
    for index, span in spans.iterrows():
        label = f"{span['rate']:g}/s" if pd.notna(span["rate"]) else f"{span['users']} users"
        fig.add_vrect(
            x0=span["started_at"], x1=span["ended_at"], fillcolor=BAND_COLORS[int(index) % 2], line_width=0,
            layer="below", annotation_text=label, annotation_position="top left",
        )  # fmt: skip


def requests_over_time(sample: pd.DataFrame, steps: pd.DataFrame) -> go.Figure:
    """Each sampled request's TTFT and E2E at its send time, failures marked, step bands behind."""
    fig = go.Figure()
    ok = sample[sample["outcome"] == "ok"]
    for metric in (registry.get("ttft_ms"), registry.get("e2e_ms")):
        fig.add_trace(
            go.Scattergl(
                x=ok["started_at"], y=ok[metric.name], name=metric.label, mode="markers",
                marker={"size": 4, "opacity": 0.6},
            )
        )  # fmt: skip
    failed = sample[sample["outcome"] != "ok"]
    if len(failed):
        fig.add_trace(
            go.Scattergl(
                x=failed["started_at"], y=failed["e2e_ms"], name="failed (E2E)", mode="markers",
                marker={"size": 7, "symbol": "x", "color": "crimson"}, text=failed["outcome"],
            )
        )  # fmt: skip
    step_bands(fig, steps)
    fig.update_layout(title="Requests over time", xaxis_title="Send time (UTC)", yaxis_title="Latency (ms)")
    return fig


def histograms(sample: pd.DataFrame, metric: Metric) -> go.Figure:
    """Distribution of a per-request ``metric`` per step, overlaid, for successful measured requests."""
    ok = sample[(sample["outcome"] == "ok") & ~sample["in_warmup"]]
    fig = go.Figure()
    for (target, step), rows in ok.groupby(["target", "step_index"], sort=True):
        fig.add_trace(go.Histogram(x=rows[metric.name], name=f"{target} step {step}", opacity=0.6))
    fig.update_layout(
        title=f"{metric.label} by step", barmode="overlay", xaxis_title=metric.header(), yaxis_title="Requests"
    )
    return fig


def stacked_bars(frame: pd.DataFrame, x: str, stack: str, y: str, title: str, y_title: str) -> go.Figure:
    """``y`` summed per ``x``, stacked by ``stack``."""
    fig = go.Figure()
    for key, rows in frame.groupby(stack, sort=True, dropna=False):
        totals = rows.groupby(x, sort=True)[y].sum()
        fig.add_trace(go.Bar(x=[str(v) for v in totals.index], y=totals.to_list(), name=str(key)))
    fig.update_layout(title=title, barmode="stack", yaxis_title=y_title)
    return fig
