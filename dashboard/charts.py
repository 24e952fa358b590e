"""Plotly figures from data frames: one colour per target, no I/O.

Figures carry their meaning in trace names, which the tests read: ``"<target>"`` for a target's line,
``"<target> p90"`` for a percentile, ``"<target> goodput"``, ``"<target> knee"`` and
``"<target> saturated"`` for the markers.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

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
    frame: pd.DataFrame, metric: str, label: str, knees: Mapping[str, float | None], limit_ms: float | None
) -> go.Figure:
    """A latency's p50/p90/p99 against load: colour per target, dash per percentile; the SLO limit as a line."""
    colors = target_colors(list(frame["target"].unique()))
    fig = go.Figure()
    for target, rows in frame.groupby("target", sort=True):
        rows = rows.sort_values("load")
        for p, dash in DASH_BY_PERCENTILE.items():
            fig.add_trace(
                go.Scatter(
                    x=rows["load"], y=rows[f"{metric}_p{p}_ms"], name=f"{target} p{p}", legendgroup=str(target),
                    mode="lines+markers", line={"color": colors[str(target)], "dash": dash},
                )
            )  # fmt: skip
    _markers(fig, frame, f"{metric}_p99_ms", knees, colors)
    if limit_ms is not None:
        fig.add_hline(y=limit_ms, line={"color": "crimson", "dash": "dot"}, annotation_text=f"SLO p99 {limit_ms:g} ms")
    fig.update_layout(
        title=f"{label} vs load", xaxis_title=load_title(frame), yaxis_title=f"{label} (ms)", legend_title="Target, pct"
    )
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
    """How fast a runtime's cumulative counter grew between consecutive scrapes, per target and host.

    ``frame`` holds scraped values (``target``, ``host``, ``sampled_at``, ``metric``, ``labels``,
    ``value``). Each series (a label set: an engine, a model) is followed on its own, and the increases
    of one scrape's series are summed. The result's ``value`` is the increase per second, or with
    ``per``, per increase of that other counter (hits per query). An interval where a series went down
    (the runtime restarted) is left out, as is one where ``per`` did not grow. Two runtimes scraped
    under one target from one host with the same labels cannot be told apart: give each its own target.
    """
    keys = ["target", "host", "sampled_at"]

    def increases(name: str) -> pd.DataFrame:
        rows = frame[frame["metric"] == name].assign(series=lambda f: f["labels"].map(_labels_key))
        rows = rows.sort_values([*keys, "series"])
        by_series = rows.groupby(["target", "host", "series"])
        rows = rows.assign(increase=by_series["value"].diff(), seconds=by_series["sampled_at"].diff())
        summed = (
            rows.dropna(subset=["increase"])
            .groupby(keys, as_index=False)
            .agg(increase=("increase", "sum"), lowest=("increase", "min"), seconds=("seconds", "max"))
        )
        summed = summed[summed["lowest"] >= 0]  # a series went down: that runtime restarted
        return summed.assign(seconds=summed["seconds"].dt.total_seconds())

    rows = increases(metric)
    if per is None:
        rows = rows[rows["seconds"] > 0]
        return rows.assign(value=rows["increase"] / rows["seconds"])[keys + ["value"]]
    rows = rows.merge(increases(per)[keys + ["increase"]], on=keys, suffixes=("", "_per"))
    rows = rows[rows["increase_per"] > 0]
    return rows.assign(value=rows["increase"] / rows["increase_per"])[keys + ["value"]]


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


def _labels_key(labels: object) -> str:
    return repr(sorted(labels.items())) if isinstance(labels, dict) else repr(labels)


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
    for column, label in (("ttft_ms", "TTFT"), ("e2e_ms", "E2E")):
        fig.add_trace(
            go.Scattergl(
                x=ok["started_at"], y=ok[column], name=label, mode="markers", marker={"size": 4, "opacity": 0.6}
            )
        )
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


def histograms(sample: pd.DataFrame, column: str, label: str) -> go.Figure:
    """Distribution of ``column`` per step, overlaid, for successful measured requests."""
    ok = sample[(sample["outcome"] == "ok") & ~sample["in_warmup"]]
    fig = go.Figure()
    for (target, step), rows in ok.groupby(["target", "step_index"], sort=True):
        fig.add_trace(go.Histogram(x=rows[column], name=f"{target} step {step}", opacity=0.6))
    fig.update_layout(title=f"{label} by step", barmode="overlay", xaxis_title=f"{label} (ms)", yaxis_title="Requests")
    return fig


def stacked_bars(frame: pd.DataFrame, x: str, stack: str, y: str, title: str, y_title: str) -> go.Figure:
    """``y`` summed per ``x``, stacked by ``stack``."""
    fig = go.Figure()
    for key, rows in frame.groupby(stack, sort=True, dropna=False):
        totals = rows.groupby(x, sort=True)[y].sum()
        fig.add_trace(go.Bar(x=[str(v) for v in totals.index], y=totals.to_list(), name=str(key)))
    fig.update_layout(title=title, barmode="stack", yaxis_title=y_title)
    return fig
