"""Sweep: throughput and latency against load (concurrency, or request rate in open loop), one line per
target, with the knee (highest load meeting the SLOs), the runtime's own token count where it was scraped, and
the steps where the load generator saturated or whose window was too short for their requests."""

import pandas as pd
import streamlit as st

from dashboard import charts, queries, tables, widgets
from stampede import registry
from stampede.metrics import SATURATED_CPU_PCT, SATURATED_LOOP_LAG_MS
from stampede.report import knees
from stampede.slo import Slo
from stampede.summary import SERVER_TOLERANCE_PCT

# Late chunks are information while under this share of every step's output chunks, a warning from it
# (docs/metrics.md): a clean run reads a few chunks late, a stalled client many.
LATE_WARNING_SHARE = 0.01

st.title("Sweep")
url = queries.database_url()
run = widgets.pick_run(url)
run_slo = Slo.of_config(queries.run_detail(url, run["id"])["config"])
limits = widgets.slo_limits(run_slo)


def page() -> None:
    summaries = queries.step_summaries(url, run["id"])
    if not summaries:
        st.info("No step of this run has ended yet.")
        return
    steps = pd.DataFrame([s.as_row() for s in summaries])
    found = knees(summaries, limits) if limits.any_set else {}
    knee_loads = {t: None if k is None else k.load for t, k in found.items()}

    if limits.any_set:
        text = ", ".join(f"{t}: {'none' if v is None else f'{v:g}'}" for t, v in knee_loads.items())
        st.markdown(f"**Knee** (highest load meeting every SLO, ★): {text}")
    if steps["saturated"].any():
        st.warning(f"✕ marks steps where a load generator saturated (CPU ≥ {SATURATED_CPU_PCT:g} % or loop lag ≥ "
                   f"{SATURATED_LOOP_LAG_MS:g} ms): those figures describe the client, not the server.")  # fmt: skip
    late_chunks(steps.merge(queries.output_chunks(url, run["id"]), on=["target", "step"], how="left"))

    short = steps[steps["too_short"]]
    if len(short):
        where = ", ".join(f"{r.target} step {r.step}: lengthen to {r.lengthen_to_s:g} s" for r in short.itertuples())
        st.warning(f"Too short for its requests (fewer than {summaries[0].summary.min_completions} completions in the "
                   f"window, or E2E p50 over a third of it; its figures depend on chance): {where}.")  # fmt: skip
    little = steps[steps["little_mismatch"]]
    if len(little):
        where = ", ".join(f"{r.target} step {r.step}" for r in little.itertuples())
        st.warning(f"In flight ≠ completions/s × E2E (Little's law, over 10 % apart) in {where}: too few completions "
                   "to describe the load (columns mean_in_flight, little_in_flight).")  # fmt: skip
    incomplete = [s for s in summaries if s.incomplete]
    if incomplete:
        where = ", ".join(f"{s.target} step {s.index} ({s.stored:,} of {s.produced:,})" for s in incomplete)
        st.warning(f"Incomplete: the store holds fewer requests than the load generators made in {where}. The rest "
                   "are queued for the workers, kept in a file by a Locust process (`stampede replay`) or given up "
                   "on by RQ (`stampede replay --failed`); these figures lack them.")  # fmt: skip
    lost = [s for s in summaries if s.lost_workers]
    if lost:
        where = ", ".join(f"{s.target} step {s.index} ({s.lost_workers} lost {s.lost_after_s or 0:.0f} s in, "
                          f"{s.users_left} of {s.summary.users} users left)" for s in lost)  # fmt: skip
        st.warning(f"Locust workers stopped reporting during {where}: those figures are for the smaller load.")
    differ = [s for s in summaries if s.summary.server_disagrees]
    if differ:
        where = ", ".join(f"{s.target} step {s.index} ({s.summary.server_difference_pct:+.1f} %)" for s in differ)
        st.warning(f"The client's output tokens/s and the runtime's own counter are over {SERVER_TOLERANCE_PCT:g} % "
                   f"apart in {where} (docs/metrics.md).")  # fmt: skip
    scraped = any(s.summary.server_output_tokens_per_s is not None for s in summaries)
    server = {"server_output_tokens_per_s": "server"} if scraped else {}
    tokens = charts.by_load(
        steps, {"output_tokens_per_s": ""} | server, "Output tokens/s vs load", "Output tokens/s", knee_loads
    )
    rates = {"requests_per_s": ""} | ({"goodput_requests_per_s": "goodput"} if run_slo.request_slo() else {})
    requests = charts.by_load(steps, rates, "Requests/s vs load", "Requests/s", knee_loads)
    left, right = st.columns(2)
    left.plotly_chart(tokens, key="tokens")
    right.plotly_chart(requests, key="requests")
    limits_ms = limits.latency_limits()
    for column, name in zip(st.columns(3), ("ttft_ms", "itl_ms", "e2e_ms"), strict=True):
        metric = registry.get(name)
        chart = charts.latency_by_load(steps, metric, knee_loads, limits_ms.get(name))
        column.plotly_chart(chart, key=metric.base)

    st.subheader("Steps")
    tables.show(steps)
    widgets.download_csv(steps, "sweep")
    widgets.download_run_json(url, run["id"])


def late_chunks(steps: pd.DataFrame) -> None:
    """Say how many chunks were read too late to time exactly, as a warning where a step has many."""
    late = int(steps["late_chunks"].sum())
    if not late:
        return
    chunks = steps["chunks"].fillna(0)  # a step without a successful request has no chunks, late or not
    text = (
        f"{late:,} of {int(chunks.sum()):,} output chunks ({100 * late / chunks.sum():.2f} %) were read together "
        "with bytes that came after them and are timed up to those bytes' arrival"
    )
    limit = f"{100 * LATE_WARNING_SHARE:g} %"
    many = steps[(steps["late_chunks"] > 0) & (steps["late_chunks"] >= LATE_WARNING_SHARE * chunks)]
    if many.empty:
        st.info(f"{text}, under {limit} in every step (column Late chunks; docs/metrics.md).")
        return
    where = ", ".join(
        f"{row['target']} step {row['step']} ({100 * row['late_chunks'] / chunks[i]:.1f} %)"
        for i, row in many.iterrows()
    )
    st.warning(
        f"{text}: late by up to a gap between chunks, which moves TTFT and ITL. That is {limit} or more of the "
        f"chunks in {where} (column Late chunks; docs/metrics.md)."
    )


widgets.live(run["status"], page)
