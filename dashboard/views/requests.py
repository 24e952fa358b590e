"""Requests: a random sample of a run's requests over time, latency histograms per step, errors by
outcome and HTTP status, the server's share of each request against network and queueing, model loads."""

import pandas as pd
import streamlit as st

from dashboard import charts, queries, tables, widgets
from stampede import registry
from stampede.metrics import MODEL_LOAD_MIN_MS

# Requests drawn per page at most; more would only slow the browser.
SAMPLE_LIMIT = 5000
SERVER_PARTS = ("load_ms", "prompt_eval_ms", "eval_ms", "server_other_ms", "network_and_queue_ms")

st.title("Requests")
url = queries.database_url()
run = widgets.pick_run(url)
steps = queries.steps(url, run["id"])
target = st.sidebar.selectbox("Target", [None, *sorted(steps["target"].unique())], format_func=lambda t: t or "All")
indices = sorted(steps.loc[steps["target"] == target, "index"]) if target else sorted(steps["index"].unique())
step = st.sidebar.selectbox("Step", [None, *indices], format_func=lambda i: "All" if i is None else str(i))


def page() -> None:
    sample = queries.request_sample(url, run["id"], target, step, SAMPLE_LIMIT)
    if sample.empty:
        st.info("No requests stored for this selection.")
        return
    total = sample.attrs["total"]
    note = f"a random sample of {len(sample):,}" if len(sample) < total else "all of them"
    st.caption(f"{total:,} requests (warm-up included); the charts show {note}.")

    st.plotly_chart(charts.requests_over_time(sample, steps), key="scatter")
    left, right = st.columns(2)
    left.plotly_chart(charts.histograms(sample, registry.get("ttft_ms")), key="hist_ttft")
    right.plotly_chart(charts.histograms(sample, registry.get("e2e_ms")), key="hist_e2e")

    st.subheader("Errors")
    counts = queries.outcomes(url, run["id"])
    failed = counts[counts["outcome"] != "ok"]
    if failed.empty:
        st.success("Every request succeeded.")
    else:
        failed = failed.assign(kind=failed["outcome"] + " " + failed["http_status"].map(_status))
        failed = failed.assign(step=failed["target"] + " step " + failed["step_index"].astype(str))
        title = "Failed requests by outcome"
        st.plotly_chart(charts.stacked_bars(failed, "step", "kind", "requests", title, "Requests"), key="errors")
    tables.show(counts)
    widgets.download_csv(counts, "outcomes")

    st.subheader("Server time against network and queueing")
    timed = sample[(sample["outcome"] == "ok") & sample["total_ms"].notna()]
    if timed.empty:
        st.info("No runtime in this selection reports its own timings (Ollama does; OpenAI-style servers do not).")
    else:
        # A part the server left out of its account took no time (no model load, say).
        parts = timed.fillna({"load_ms": 0.0, "prompt_eval_ms": 0.0, "eval_ms": 0.0})
        # The server's total less the parts it itemised, so each bar adds up to the mean E2E.
        itemised = parts["load_ms"] + parts["prompt_eval_ms"] + parts["eval_ms"]
        parts = parts.assign(server_other_ms=(parts["total_ms"] - itemised).clip(lower=0.0))
        split = parts.groupby(["target", "step_index"])[list(SERVER_PARTS)].mean().reset_index()
        long = split.melt(["target", "step_index"], var_name="part", value_name="ms")
        long["step"] = long["target"] + " step " + long["step_index"].astype(str)
        st.plotly_chart(
            charts.stacked_bars(long, "step", "part", "ms", "Mean time per request, server parts and the rest", "ms"),
            key="split",
        )
        loads = timed[timed["load_ms"].fillna(0.0) >= MODEL_LOAD_MIN_MS]
        st.markdown(
            f"**Model loads** (server load ≥ {MODEL_LOAD_MIN_MS:g} ms, left out of TTFT): {len(loads)} in the sample"
        )
        if len(loads):
            tables.show(loads[["target", "step_index", "started_at", "load_ms", "ttft_ms", "e2e_ms"]])

    st.subheader("Sampled requests")
    tables.show(sample)
    widgets.download_csv(sample, "requests")


def _status(status: float) -> str:
    return "" if pd.isna(status) else str(int(status))


widgets.live(run["status"], page)
