"""Compare: two or more runs side by side at equal load (same target and load), with each figure's
change against the first run picked, and the settings in which their configs differ."""

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, queries, tables, widgets
from stampede import registry

# Registry metrics compared at equal load: throughputs, each latency's p99, the error share.
FIGURES = (
    "output_tokens_per_s", "requests_per_s",
    *(registry.get(name).column(99) for name in ("ttft_ms", "itl_ms", "e2e_ms")), "error_rate",
)  # fmt: skip

st.title("Compare runs")
url = queries.database_url()
runs = queries.runs(url)
if len(runs) < 2:
    st.info("Comparing needs at least two runs in the results store.")
    st.stop()
labels = {run["id"]: widgets.run_label(run) for _, run in runs.iterrows()}
picked = st.multiselect(
    "Runs (the first is the reference)", list(labels), default=list(labels)[1::-1], format_func=labels.__getitem__
)
if len(picked) < 2:
    st.info("Pick at least two runs.")
    st.stop()


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys, so two configs can be compared setting by setting."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


names = {run_id: f"{runs.set_index('id').at[run_id, 'name']} ({run_id[:8]})" for run_id in picked}
frames = [
    pd.DataFrame([s.as_row() for s in queries.step_summaries(url, run_id)]).assign(run=names[run_id])
    for run_id in picked
]
steps = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else pd.DataFrame()
if steps.empty:
    st.info("None of these runs has an ended step.")
    st.stop()

fig = charts.by_load(steps.assign(target=steps["run"] + " · " + steps["target"]), {"output_tokens_per_s": ""},
                     "Output tokens/s vs load, by run", "Output tokens/s", {})  # fmt: skip
st.plotly_chart(fig, key="compare_tokens")

wide = steps.pivot_table(index=["target", "load"], columns="run", values=list(FIGURES), aggfunc="first")
reference = names[picked[0]]
table = pd.DataFrame(index=wide.index)
headers: dict[str, Any] = {}
for figure in FIGURES:
    shown = tables.shown(figure, wide[figure].dtypes.iloc[0])
    before = wide[(figure, reference)] if reference in wide[figure].columns else None
    for name in [names[r] for r in picked if names[r] in wide[figure].columns]:
        table[f"{figure} · {name}"] = wide[(figure, name)]
        headers[f"{figure} · {name}"] = tables.column(shown, f"{shown.label} · {name}")
        if name != reference and before is not None:
            table[f"{figure} Δ% · {name}"] = 100.0 * (wide[(figure, name)] - before) / before
            headers[f"{figure} Δ% · {name}"] = st.column_config.NumberColumn(
                f"{shown.label} Δ · {name}", format="%+.1f %%"
            )
table = table.reset_index()
st.subheader("At equal load")
st.caption(f"Δ is the change against {reference}.")
tables.show(table, headers)
widgets.download_csv(table, "compare")

st.subheader("Config differences")
configs = {names[r]: flatten(queries.run_detail(url, r)["config"]) for r in picked}
keys = sorted(set().union(*configs.values()))
diff = pd.DataFrame(
    [{"setting": k} | {name: str(c.get(k, "—")) for name, c in configs.items()} for k in keys
     if len({str(c.get(k, "—")) for c in configs.values()}) > 1]
)  # fmt: skip
if diff.empty:
    st.success("The configs are identical.")
else:
    tables.show(diff)
    widgets.download_csv(diff, "config_diff")
