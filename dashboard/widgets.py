"""Controls shared by several views: the run picker, SLO overrides, downloads and live refresh."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import streamlit as st

from dashboard import queries
from stampede import registry
from stampede.slo import LATENCY_LIMITS, Slo

# A plain session key, not the widget's own: Streamlit forgets a widget's state when the user opens a
# page that does not draw it, and the run picked should follow the user from page to page.
RUN_KEY = "run_id"
# How often a page of a running run reloads its figures.
LIVE_REFRESH_S = 5


def run_label(run: pd.Series) -> str:
    """How a run is named in pickers: name, start (UTC) and status."""
    return f"{run['name']} · {run['started_at']:%Y-%m-%d %H:%M} · {run['status']}"


def pick_run(url: str) -> pd.Series:
    """A run picked in the sidebar (the ``run`` query parameter, then the last pick, then the latest);
    with no run in the store, the page says so and stops."""
    runs = queries.runs(url)
    if runs.empty:
        st.info(
            "No runs in the results store yet. Run a sweep (or `stampede demo`) with the same "
            "`STAMPEDE_DATABASE_URL`, then reload."
        )
        st.stop()
    ids = list(runs["id"])
    labels = {run["id"]: run_label(run) for _, run in runs.iterrows()}
    wanted = st.query_params.get("run") or st.session_state.get(RUN_KEY)
    run_id = st.sidebar.selectbox(
        "Run", ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.__getitem__
    )
    st.session_state[RUN_KEY] = run_id
    st.query_params["run"] = run_id
    return runs.loc[runs["id"] == run_id].iloc[0]


def slo_limits(run_slo: Slo) -> Slo:
    """The SLOs to judge the knee by: the run's, each overridable in the sidebar.

    A latency limit of 0 ms is no limit (no request meets it); an error-rate limit of 1 is none either,
    so that 0, no errors at all, stays a limit one can set.
    """
    st.sidebar.subheader("SLOs (p99)")
    values: dict[str, float | None] = {}
    for name in LATENCY_LIMITS:
        metric = registry.get(name)
        value = st.sidebar.number_input(
            f"{metric.label} {metric.unit}",
            min_value=0.0,
            value=float(getattr(run_slo, name) or 0.0),
            help="0: no limit",
            key=f"slo_{name}",
        )
        values[name] = value or None
    rate = st.sidebar.number_input(
        "Max error rate",
        min_value=0.0,
        max_value=1.0,
        value=1.0 if run_slo.max_error_rate is None else float(run_slo.max_error_rate),
        help="Share of failed requests, 0 to 1; 1: no limit",
        key="slo_max_error_rate",
    )
    values["max_error_rate"] = None if rate >= 1.0 else rate
    return Slo(**values)


def download_csv(frame: pd.DataFrame, name: str) -> None:
    """A button that downloads ``frame`` as ``name``.csv."""
    st.download_button(
        f"Download {name}.csv", frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv", key=f"csv_{name}"
    )


def download_run_json(url: str, run_id: str) -> None:
    """A button that downloads the run (row, config, findings) with its step summaries as JSON."""
    data = queries.run_detail(url, run_id) | {"steps": [step.as_row() for step in queries.step_summaries(url, run_id)]}
    st.download_button(
        "Download run.json", json.dumps(data, indent=2, default=str), file_name=f"run-{run_id}.json",
        mime="application/json", key="json_run",
    )  # fmt: skip


def live(status: str, body: Callable[[], None]) -> None:
    """Draw ``body``; while the run is still running, redraw it every few seconds with fresh data."""
    if status == "running":
        st.caption(f"Run in progress: refreshing every {LIVE_REFRESH_S} s.")
        st.fragment(run_every=LIVE_REFRESH_S)(body)()
    else:
        body()
