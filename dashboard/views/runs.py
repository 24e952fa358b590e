"""Runs: every stored run with its targets, model, steps, dates, status, hosts and regression verdict;
filter them and open one in the Sweep page."""

import pandas as pd
import streamlit as st

from dashboard import queries, tables, widgets

st.title("Runs")
url = queries.database_url()
runs = queries.runs(url)
if runs.empty:
    st.info("No runs in the results store yet.")
    st.stop()

left, right = st.columns([2, 1])
text = left.text_input("Filter (name, target or model)", key="runs_filter").strip().lower()
statuses = right.multiselect("Status", sorted(runs["status"].unique()), key="runs_status")
shown = runs
if text:
    haystack = shown["name"] + " " + shown["targets"] + " " + shown["models"]
    shown = shown[haystack.str.lower().str.contains(text, regex=False)]
if statuses:
    shown = shown[shown["status"].isin(statuses)]

tables.show(
    shown.assign(open=[f"sweep?run={run_id}" for run_id in shown["id"]]),
    {
        "open": st.column_config.LinkColumn("Open", display_text="Sweep ↗"),
        "baseline_run_id": st.column_config.TextColumn("Baseline run"),
        "regression": st.column_config.CheckboxColumn("Regression"),
        "accepted": st.column_config.CheckboxColumn("Accepted (baseline)"),
    },
)
st.caption(f"{len(shown)} of {len(runs)} runs")
produced = pd.to_numeric(shown["produced_requests"])  # None (a run without counts) becomes NaN: never short
incomplete = shown[shown["stored_requests"] < produced]
if len(incomplete):
    where = ", ".join(f"{r.name} ({r.stored_requests:,} of {int(r.produced_requests):,} requests stored)"
                      for r in incomplete.itertuples())  # fmt: skip
    st.warning(f"Incomplete: {where}. The rest are queued for the workers, kept in a file by a Locust process "
               "(`stampede replay`) or given up on by RQ (`stampede replay --failed`).")  # fmt: skip
widgets.download_csv(shown, "runs")

if len(shown):
    labels = {run["id"]: widgets.run_label(run) for _, run in shown.iterrows()}
    chosen = st.selectbox("Run to open", list(labels), format_func=labels.__getitem__, key="runs_open")
    if st.button("Open in Sweep", key="runs_open_button"):
        st.session_state[widgets.RUN_KEY] = chosen
        st.query_params["run"] = chosen
        st.switch_page("views/sweep.py")
