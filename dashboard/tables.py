"""How the dashboard's tables show a column: a label with its unit and a rounding, read from the name.

A metric's column is labelled as the metric registry heads it (:meth:`stampede.registry.Metric.header`).
Every other column name ends in its unit too (``measured_s``, ``power_w``), so the name alone says how
to show it: the unit gives the rounding and the label's unit, the rest reads as words, with the
abbreviations users know (GPU, HTTP). Downloads keep the raw names, which scripts read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd
import streamlit as st

from stampede import registry

# Shown for a missing value (no request rate in closed loop, no goodput without an SLO).
MISSING = "—"
WORDS = {"gpu": "GPU", "http": "HTTP", "sm": "SM"}
# Names that do not read well word by word.
LABELS = {
    "id": "ID",
    "step_index": "Step",
    "request_rate_per_s": "Request rate (requests/s)",
    "load": "Load",
    "in_warmup": "Warm-up",
}
# What a column's header says when hovered, where the label cannot say it all.
HELP = {"load": "Concurrent users, or requests/s in open loop"}
# A unit suffix: the unit as labels write it, and the printf format (Streamlit's NumberColumn) of a value.
# Durations to 0.1 s, latencies to 0.1 ms, rates to two decimals.
UNITS = (
    ("_per_s", "/s", "%,.2f"),
    ("_ms", "ms", "%,.1f"),
    ("_s", "s", "%.1f"),
    ("_pct", "%", "%.1f"),
    ("_w", "W", "%.0f"),
    ("_c", "°C", "%.0f"),
    ("_mhz", "MHz", "%.0f"),
    ("_gib", "GiB", "%.2f"),
)


@dataclass(frozen=True)
class Shown:
    """How one column is shown: its label, its kind of cell, and the format of a number."""

    label: str
    kind: Literal["text", "number", "percent", "bytes", "checkbox", "datetime"] = "text"
    format: str | None = None
    help: str | None = None


def words(name: str) -> str:
    """A name as words: ``output_tokens`` -> ``Output tokens``, ``ttft`` -> ``TTFT``."""
    text = " ".join(WORDS.get(w, w) for w in name.split("_") if w)
    return text[:1].upper() + text[1:]


def shown(name: str, dtype: Any = None) -> Shown:
    """How the column ``name`` (of pandas ``dtype``, when known) is shown."""
    item = _by_unit(name, dtype)
    found = registry.COLUMNS.get(name)
    if found is not None:
        metric, percentile = found
        return replace(item, label=metric.header(percentile), help=metric.hover)
    return replace(item, label=LABELS.get(name, item.label), help=HELP.get(name))


def _by_unit(name: str, dtype: Any) -> Shown:
    if name.endswith("_at"):
        return Shown(f"{words(name[: -len('_at')])} (UTC)", "datetime", "YYYY-MM-DD HH:mm:ss")
    if name.endswith("_bytes"):
        return Shown(words(name[: -len("_bytes")]), "bytes", "bytes")
    if name.endswith("_rate"):
        return Shown(words(name), "percent", "percent")
    for suffix, unit, number_format in UNITS:
        if name.endswith(suffix):
            base = words(name[: -len(suffix)])
            # "Output tokens/s" reads better than "Output tokens (/s)".
            return Shown(f"{base}{unit}" if unit == "/s" else f"{base} ({unit})", "number", number_format)
    return Shown(words(name), *_kind(name, dtype))


def _kind(name: str, dtype: Any) -> tuple[Literal["text", "number", "checkbox"], str | None]:
    if dtype is None:
        return "text", None
    if pd.api.types.is_bool_dtype(dtype):
        return "checkbox", None
    if pd.api.types.is_integer_dtype(dtype):
        return "number", "%,d"
    if pd.api.types.is_float_dtype(dtype):
        # A load reads 1, 2, 4 users or 0.5 requests/s; other unitless figures keep Streamlit's own rounding.
        return "number", "%g" if name == "load" else None
    return "text", None


def column(item: Shown, label: str | None = None) -> Any:
    """Streamlit's column config for a column shown as ``item`` (under ``label`` when given)."""
    text = label or item.label
    if item.kind == "checkbox":
        return st.column_config.CheckboxColumn(text, help=item.help)
    if item.kind == "datetime":
        return st.column_config.DatetimeColumn(text, format=item.format, help=item.help)
    if item.kind == "text":
        return st.column_config.TextColumn(text, help=item.help)
    return st.column_config.NumberColumn(text, format=item.format, help=item.help)


def show(frame: pd.DataFrame, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """``frame`` as a table, each column labelled and rounded by its name (``config`` overrides some)."""
    columns = {name: column(shown(name, dtype)) for name, dtype in frame.dtypes.items()}
    st.dataframe(frame, hide_index=True, placeholder=MISSING, column_config=columns | dict(config or {}), **kwargs)
