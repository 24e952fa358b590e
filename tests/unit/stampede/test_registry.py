"""The metric registry is the one list of metrics: every consumer's columns are its, and the docs match it."""

import dataclasses
import re

import pytest

from stampede import metrics, registry, regression, report, table
from stampede.registry import UNIT_SUFFIXES, Direction, Scope
from stampede.slo import LATENCY_LIMITS
from stampede.summary import StepSummary

STEP_FIELDS = {f.name for f in dataclasses.fields(StepSummary)} | {
    name for name, value in vars(StepSummary).items() if isinstance(value, property)
}


@pytest.mark.parametrize("metric", registry.METRICS.values(), ids=lambda m: m.name)
def test_each_metric_names_its_unit_label_formula_and_direction(metric: registry.Metric) -> None:
    assert metric.unit in UNIT_SUFFIXES and metric.name.endswith(UNIT_SUFFIXES[metric.unit])
    assert metric.label and metric.formula and isinstance(metric.direction, Direction)
    assert all(column.endswith(UNIT_SUFFIXES[metric.unit]) for column in metric.columns())


@pytest.mark.parametrize("metric", registry.METRICS.values(), ids=lambda m: m.name)
def test_each_metric_says_what_computes_it(metric: registry.Metric) -> None:
    if metric.scope is Scope.STEP:
        assert metric.name in STEP_FIELDS and not metric.percentiles
    elif metric.name != "load_ms":  # the server's own figure, only compared with MODEL_LOAD_MIN_MS
        assert metric.computed_by is not None and getattr(metrics, metric.computed_by.__name__) is metric.computed_by
    if metric.percentiles:
        assert metric.name in STEP_FIELDS and metric.percentiles == metrics.PERCENTILES


def test_every_figure_of_a_report_row_is_a_registry_metric() -> None:
    figures = set(report.ROW_COLUMNS) - set(report.PLACE_COLUMNS) - set(report.CHECK_COLUMNS)
    assert figures <= set(registry.COLUMNS)
    assert {c for m in registry.LATENCIES for c in m.columns()} | {m.name for m in registry.STEP_FIGURES} <= figures
    assert len(report.ROW_COLUMNS) == len(set(report.ROW_COLUMNS))


def test_the_table_the_regression_check_and_the_slo_read_registry_metrics() -> None:
    for name, percentile in (*table.FIGURES, *table.SERVER, *table.LATENCY, *table.GOODPUT):
        metric = registry.get(name)
        assert percentile is None or percentile in metric.percentiles
    assert [m.name for m in regression.CHECKED] == ["output_tokens_per_s", "ttft_ms", "itl_ms", "e2e_ms"]
    assert all(registry.get(name).direction is Direction.LOWER for name in LATENCY_LIMITS)


def test_headers_carry_the_unit() -> None:
    assert registry.header("ttft_p99_ms") == "TTFT p99 (ms)"
    assert registry.header("output_tokens_per_s") == "Output tokens/s"
    assert registry.header("server_difference_pct") == "Server difference (%)"
    assert registry.header("target") is None
    assert registry.get("output_tokens_per_s").short() == "out tok/s"


def test_docs_tables_are_the_registrys() -> None:
    text = registry.DOCS.read_text()
    assert registry.with_docs_tables(text) == text, "run `python -m stampede.registry` to regenerate them"
    documented = set()
    for kind in ("request", "step"):
        table_text = text.split(f"<!-- registry:{kind} -->")[1].split(f"<!-- /registry:{kind} -->")[0]
        documented |= set(re.findall(r"^\| `([a-z0-9_]+)` \|", table_text, flags=re.MULTILINE))
    assert documented == set(registry.METRICS)


def test_a_metric_missing_from_the_docs_is_caught() -> None:
    text = registry.DOCS.read_text()
    stale = text.replace("| `reconnects` |", "| `reconnected` |")
    assert registry.with_docs_tables(stale) != stale
