"""GPU and runtime: GPU utilisation, memory and power per host and GPU over time, and the runtimes' own
gauges (vLLM KV-cache usage, requests running and waiting; Ollama model size against its VRAM share)
and counters as rates (vLLM preemptions per second, prefix-cache hit rate), with the run's load steps
shaded behind."""

import streamlit as st

from dashboard import charts, queries, tables, widgets

GIB = 2**30
# Runtime gauges drawn together: chart title, y axis, and the metric names it shows.
GAUGES = (
    ("KV-cache usage", "fraction used", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    ("Requests running and waiting", "requests", ("vllm:num_requests_running", "vllm:num_requests_waiting")),
    ("Ollama model size and VRAM share", "GiB", ("ollama:size_bytes", "ollama:size_vram_bytes")),
)
# Runtime counters drawn as rates between scrapes: chart title, y axis, the counter, and what it is per.
RATES = (
    ("vLLM preemptions", "preemptions/s", "vllm:num_preemptions_total", None),
    ("vLLM prefix-cache hit rate", "cached / queried prompt tokens", "vllm:prefix_cache_hits_total",
     "vllm:prefix_cache_queries_total"),
)  # fmt: skip
# vLLM before 0.10 named its prefix-cache counters so.
OLDER_COUNTERS = {
    "vllm:gpu_prefix_cache_queries_total": "vllm:prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits_total": "vllm:prefix_cache_hits_total",
}

st.title("GPU and runtime")
url = queries.database_url()
run = widgets.pick_run(url)


def page() -> None:
    steps = queries.steps(url, run["id"])
    gpus = queries.gpu_samples(url, run["id"])
    if gpus.empty:
        st.info("No GPU readings for this run (start `stampede agent` on the GPU hosts with the run id).")
    else:
        gpus = gpus.assign(memory_used_gib=gpus["memory_used_bytes"] / GIB)
        group = ["host", "gpu_index"]
        st.plotly_chart(charts.over_time(gpus, "utilization_pct", group, "GPU utilisation", "%", steps), key="util")
        left, right = st.columns(2)
        left.plotly_chart(
            charts.over_time(gpus, "memory_used_gib", group, "GPU memory used", "GiB", steps), key="memory"
        )
        right.plotly_chart(charts.over_time(gpus, "power_w", group, "GPU power", "W", steps), key="power")
        widgets.download_csv(gpus, "gpu_samples")

    runtime = queries.runtime_samples(url, run["id"])
    if runtime.empty:
        st.info("No runtime metrics for this run.")
        return
    drawn: set[str] = set()
    for title, unit, metrics in GAUGES:
        rows = runtime[runtime["metric"].isin(metrics)]
        if rows.empty:
            continue
        drawn.update(metrics)
        if unit == "GiB":
            rows = rows.assign(value=rows["value"] / GIB)
        lines = charts.gauge_lines(rows)
        st.plotly_chart(charts.over_time(lines, "value", ["target", "line"], title, unit, steps), key=title)
    counters = runtime.replace({"metric": OLDER_COUNTERS})
    for title, unit, metric, per in RATES:
        rates = charts.counter_rates(counters, metric, per)
        if rates.empty:
            continue
        drawn.update({metric, *OLDER_COUNTERS} | ({per} if per else set()))
        st.plotly_chart(charts.over_time(rates, "value", ["target", "host"], title, unit, steps), key=title)
    others = runtime[~runtime["metric"].isin(drawn)]
    if len(others):
        st.subheader("Other runtime metrics")
        tables.show(others.groupby(["target", "metric"])["value"].describe().reset_index())
    widgets.download_csv(runtime.astype({"labels": str}), "runtime_samples")


widgets.live(run["status"], page)
