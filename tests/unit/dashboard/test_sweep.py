"""The Sweep page: each target's throughput and latency against load, the knee and saturation markers."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

from streamlit.testing.v1 import AppTest

from dashboard.widgets import LIVE_REFRESH_S
from stampede.records import RunStatus
from stampede.report import ROW_COLUMNS
from tests.unit.dashboard.dashboard_fixtures import (
    APP,
    OLLAMA_LIKE,
    T0,
    VLLM_LIKE,
    Seeder,
    figures,
    run_app,
)


def traces(fig: dict) -> dict[str, dict]:
    return {t["name"]: t for t in fig["data"]}


def test_throughput_has_one_line_per_target_over_the_step_concurrencies(seeder: Seeder) -> None:
    seeder.sweep()

    figs = figures(run_app())
    tokens, requests = traces(figs["Output tokens/s vs load"]), traces(figs["Requests/s vs load"])

    assert set(tokens) == set(requests) == {"ollama-like", "vllm-like"}
    assert figs["Output tokens/s vs load"]["layout"]["xaxis"]["title"]["text"] == "Concurrent users"
    for target in tokens:
        assert tokens[target]["x"] == [1.0, 2.0, 4.0, 8.0]
        # 5 requests per user over a 10 s window, 10 tokens each: 5 tokens/s and 0.5 requests/s per user.
        assert tokens[target]["y"] == [5.0, 10.0, 20.0, 40.0]
        assert requests[target]["y"] == [0.5, 1.0, 2.0, 4.0]


def test_latency_charts_show_p50_p90_p99_per_target_without_warmup(seeder: Seeder) -> None:
    seeder.sweep()

    figs = figures(run_app())

    ttft = {name: t["y"] for name, t in traces(figs["TTFT vs load"]).items()}
    assert set(ttft) == {f"{t} p{p}" for t in ("ollama-like", "vllm-like") for p in (50, 90, 99)}
    assert ttft["ollama-like p99"] == [100.0, 200.0, 400.0, 800.0]
    assert ttft["vllm-like p50"] == [60.0, 70.0, 90.0, 130.0]
    assert traces(figs["ITL vs load"])["vllm-like p90"]["y"] == [10.25, 10.5, 11.0, 12.0]
    # E2E = TTFT + 9 gaps of ITL.
    assert traces(figs["E2E vs load"])["ollama-like p50"]["y"] == [289.0, 398.0, 616.0, 1052.0]


def test_the_knee_is_marked_at_the_highest_load_meeting_the_runs_slo(seeder: Seeder) -> None:
    seeder.sweep(slo={"ttft_ms": 300})

    at = run_app()
    tokens = traces(figures(at)["Output tokens/s vs load"])

    # TTFT p99: Ollama-like 100 ms per user, vLLM-like 50 + 10 per user.
    assert (tokens["ollama-like knee"]["x"], tokens["vllm-like knee"]["x"]) == ([2.0], [8.0])
    assert traces(figures(at)["TTFT vs load"])["ollama-like knee"]["y"] == [200.0]
    assert "ollama-like: 2, vllm-like: 8" in at.markdown[0].value


def test_the_knee_follows_slo_overrides_in_the_sidebar(seeder: Seeder) -> None:
    seeder.sweep(slo={"ttft_ms": 300})

    at = run_app()
    at.sidebar.number_input(key="slo_ttft_ms").set_value(80.0).run()

    tokens = traces(figures(at)["Output tokens/s vs load"])
    assert tokens["vllm-like knee"]["x"] == [2.0]
    assert "ollama-like knee" not in tokens


def test_an_error_rate_limit_of_zero_is_a_limit_and_one_of_one_is_none(seeder: Seeder) -> None:
    failing = dataclasses.replace(OLLAMA_LIKE, errors=lambda users: 1 if users >= 4 else 0)
    seeder.sweep(targets={"ollama-like": failing, "vllm-like": VLLM_LIKE}, slo={"ttft_ms": 1000})
    at = run_app()
    assert "ollama-like: 8, vllm-like: 8" in at.markdown[0].value

    at.sidebar.number_input(key="slo_max_error_rate").set_value(0.0).run()
    assert "ollama-like: 2, vllm-like: 8" in at.markdown[0].value

    at.sidebar.number_input(key="slo_max_error_rate").set_value(1.0).run()
    at.sidebar.number_input(key="slo_ttft_ms").set_value(0.0).run()
    assert not any("Knee" in m.value for m in at.markdown)


def test_goodput_is_drawn_when_the_run_sets_slos(seeder: Seeder) -> None:
    seeder.sweep(slo={"ttft_ms": 300})
    requests = traces(figures(run_app())["Requests/s vs load"])
    # Every request of a step has the same TTFT: all of them meet the SLO, or none do.
    assert requests["ollama-like goodput"]["y"] == [0.5, 1.0, 0.0, 0.0]
    assert requests["vllm-like goodput"]["y"] == [0.5, 1.0, 2.0, 4.0]


def test_no_goodput_or_knee_without_slos(seeder: Seeder) -> None:
    seeder.sweep()
    at = run_app()
    names = set(traces(figures(at)["Requests/s vs load"]))
    assert names == {"ollama-like", "vllm-like"}
    assert not any("Knee" in m.value for m in at.markdown)


def test_saturated_steps_are_marked(seeder: Seeder) -> None:
    seeder.sweep(saturated_steps=(3,))
    at = run_app()
    tokens = traces(figures(at)["Output tokens/s vs load"])
    assert tokens["vllm-like saturated"]["x"] == [8.0] and tokens["vllm-like saturated"]["y"] == [40.0]
    assert "saturated" in at.warning[0].value


def sweep_of(run_id: uuid.UUID) -> AppTest:
    """The dashboard opened at ``/?run=<run_id>``."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, at.exception
    return at


def test_late_chunks_are_a_note_under_1_percent_of_every_steps_chunks_and_a_warning_from_it(seeder: Seeder) -> None:
    # Per target, a step of u users has 5u successful requests of 10 chunks: 400 at 8 users, 1,500 in all.
    runs = [seeder.sweep(), seeder.sweep(late_chunks={3: 3}), seeder.sweep(late_chunks={3: 4})]
    # 0, then 3 and 4 of each target's 400 chunks at 8 users: 0.75 % and 1 %.
    none, few, many = (sweep_of(run_id) for run_id in runs)

    assert not none.warning and not none.info
    assert not few.warning
    assert [i.value for i in few.info] == [
        "6 of 1,500 output chunks (0.40 %) were read together with bytes that came after them and are timed up to "
        "those bytes' arrival, under 1 % in every step (column Late chunks; docs/metrics.md)."
    ]
    assert not many.info
    assert [w.value for w in many.warning] == [
        "8 of 1,500 output chunks (0.53 %) were read together with bytes that came after them and are timed up to "
        "those bytes' arrival: late by up to a gap between chunks, which moves TTFT and ITL. That is 1 % or more of "
        "the chunks in ollama-like step 3 (1.0 %), vllm-like step 3 (1.0 %) (column Late chunks; docs/metrics.md)."
    ]


def test_open_loop_runs_are_drawn_against_request_rate(seeder: Seeder) -> None:
    seeder.sweep(users=(8, 8), rates=(1.5, 3.0))
    fig = figures(run_app())["Output tokens/s vs load"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "Request rate (requests/s)"
    assert traces(fig)["vllm-like"]["x"] == [1.5, 3.0]


def test_latest_run_is_shown_by_default_and_another_can_be_picked(seeder: Seeder) -> None:
    seeder.sweep(name="old", users=(1, 2))
    seeder.sweep(name="new", users=(4, 8, 16), started_at=T0 + timedelta(hours=1))

    at = run_app()
    assert figures(at)["Output tokens/s vs load"]["data"][0]["x"] == [4.0, 8.0, 16.0]

    picker = at.sidebar.selectbox[0]
    picker.select(picker.options[1]).run()
    assert figures(at)["Output tokens/s vs load"]["data"][0]["x"] == [1.0, 2.0]


def test_steps_table_and_run_download(seeder: Seeder) -> None:
    seeder.sweep()
    at = run_app()
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 8
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download sweep.csv", "Download run.json"]


def test_the_steps_table_labels_every_column_with_its_unit_and_rounds_it(seeder: Seeder) -> None:
    seeder.sweep()
    table = run_app().dataframe[0]
    columns = json.loads(table.proto.columns)

    assert list(table.value.columns) == list(ROW_COLUMNS)  # the data (and its download) keep the report's names
    assert not [name for name in ROW_COLUMNS if "_" in columns[name]["label"]]
    assert columns["measured_s"] == {"label": "Measured (s)", "type_config": {"type": "number", "format": "%.1f"}}
    assert columns["ttft_p99_ms"] == {"label": "TTFT p99 (ms)", "type_config": {"type": "number", "format": "%,.1f"}}
    assert columns["requests_per_s"]["type_config"]["format"] == "%,.2f"
    assert columns["saturated"]["type_config"] == {"type": "checkbox"}
    # A closed-loop run has no request rate: its cells are missing values, shown as the placeholder.
    assert table.value["request_rate_per_s"].isna().all() and table.proto.placeholder == "—"


def test_the_root_url_opens_the_sweep_page_of_the_run_it_names(seeder: Seeder) -> None:
    old = seeder.sweep(name="old", users=(1, 2))
    seeder.sweep(name="new", users=(4, 8), started_at=T0 + timedelta(hours=1))
    at = sweep_of(old)
    assert [t.value for t in at.title] == ["Sweep"]
    assert figures(at)["Output tokens/s vs load"]["data"][0]["x"] == [1.0, 2.0]


def test_a_running_run_refreshes_and_shows_only_ended_steps(seeder: Seeder) -> None:
    seeder.sweep(status=RunStatus.RUNNING, ended_steps=2)
    at = run_app()
    assert figures(at)["Output tokens/s vs load"]["data"][0]["x"] == [1.0, 2.0]
    assert f"refreshing every {LIVE_REFRESH_S} s" in at.caption[0].value


def test_empty_store_says_there_is_nothing_to_show(seeder: Seeder) -> None:
    at = run_app()
    assert not at.get("plotly_chart")
    assert "No runs" in at.info[0].value


def test_a_step_too_short_for_its_requests_is_named_with_the_length_it_needs(seeder: Seeder) -> None:
    seeder.sweep(min_completions=8)  # 1-user steps hold 5 completions; 2-user steps 10
    at = run_app()
    [warning] = [w.value for w in at.warning]
    assert "Too short for its requests (fewer than 8 completions" in warning
    assert "ollama-like step 0: lengthen to" in warning and "vllm-like step 0: lengthen to" in warning
    assert "step 1" not in warning
