"""The Runs, Requests, GPU and runtime, and Compare pages on seeded runs with known figures."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import streamlit as st

from dashboard import queries
from tests.unit.dashboard.dashboard_fixtures import (
    OLLAMA_LIKE,
    T0,
    VLLM_LIKE,
    Seeder,
    TargetProfile,
    figures,
    run_app,
)

FLAKY_VLLM = TargetProfile(ttft_ms=VLLM_LIKE.ttft_ms, itl_ms=VLLM_LIKE.itl_ms, errors=lambda users: users)
SLOW_VLLM = TargetProfile(ttft_ms=lambda u: 2 * VLLM_LIKE.ttft_ms(u), itl_ms=VLLM_LIKE.itl_ms)


def traces(fig: dict) -> dict[str, dict]:
    return {t["name"]: t for t in fig["data"]}


def test_runs_lists_every_run_with_its_targets_and_links_into_sweep(seeder: Seeder) -> None:
    old = seeder.sweep(name="nightly", users=(1, 2))
    new = seeder.sweep(name="adhoc", targets={"vllm-like": VLLM_LIKE}, started_at=T0 + timedelta(hours=1))

    at = run_app("runs.py")
    table = at.dataframe[0].value
    assert list(table["name"]) == ["adhoc", "nightly"]
    assert list(table["targets"]) == ["vllm-like", "ollama-like, vllm-like"]
    assert list(table["steps"]) == [4, 4] and list(table["hosts"]) == [1, 1]
    assert list(table["open"]) == [f"sweep?run={new}", f"sweep?run={old}"]
    assert [b.proto.label for b in at.get("download_button")] == ["Download runs.csv"]

    at.text_input(key="runs_filter").input("OLLAMA").run()
    assert list(at.dataframe[0].value["name"]) == ["nightly"]

    at.button(key="runs_open_button").click().run()
    assert at.title[0].value == "Sweep"
    assert figures(at)["Output tokens/s vs load"]["data"][0]["x"] == [1.0, 2.0]


def test_requests_page_draws_sampled_requests_errors_and_the_server_split(seeder: Seeder) -> None:
    seeder.sweep(users=(1, 2), targets={"ollama-like": OLLAMA_LIKE, "vllm-like": FLAKY_VLLM})

    at = run_app("requests.py")
    figs = figures(at)

    # Per target: 5 measured requests per user and a warm-up one per step; vLLM-like also fails once per user.
    scatter = traces(figs["Requests over time"])
    assert len(scatter["TTFT"]["x"]) == 2 * (6 + 11) and len(scatter["failed (E2E)"]["x"]) == 3
    hist = traces(figs["TTFT by step"])
    assert hist["ollama-like step 1"]["x"] == [200.0] * 10 and hist["vllm-like step 0"]["x"] == [60.0] * 5
    errors = traces(figs["Failed requests by outcome"])
    assert errors["http_error 503"]["x"] == ["vllm-like step 0", "vllm-like step 1"]
    assert errors["http_error 503"]["y"] == [1, 2]
    # Only the Ollama-like target reports server timings; its total leaves 5 ms to network and queue.
    split = traces(figs["Mean time per request, server parts and the rest"])
    assert split["network_and_queue_ms"]["x"] == ["ollama-like step 0", "ollama-like step 1"]
    assert split["network_and_queue_ms"]["y"] == pytest.approx([5.0, 5.0])
    assert split["load_ms"]["y"] == pytest.approx([200.0 / 5, 0.0])  # one load among 5 timed requests
    # Bars add up to the mean E2E: 289 ms at one user, 398 ms at two.
    assert [sum(t["y"][i] for t in split.values()) for i in (0, 1)] == pytest.approx([289.0, 398.0])
    assert any("Model loads" in m.value and "1 in the sample" in m.value for m in at.markdown)
    assert [b.proto.label for b in at.get("download_button")] == ["Download outcomes.csv", "Download requests.csv"]

    at.sidebar.selectbox[1].select("vllm-like").run()
    at.sidebar.selectbox[2].select(1).run()
    assert len(traces(figures(at)["Requests over time"])["TTFT"]["x"]) == 11


def test_request_samples_are_bounded_and_drawn_from_the_selection(seeder: Seeder) -> None:
    run_id = str(seeder.sweep(users=(1, 2)))
    url = queries.database_url()
    sample = queries.request_sample(url, run_id, "vllm-like", 1, 4)
    assert len(sample) == 4 and sample.attrs["total"] == 11
    assert set(sample["target"]) == {"vllm-like"} and set(sample["step_index"]) == {1}
    st.cache_data.clear()
    assert len(queries.request_sample(url, run_id, None, None, 5000)) == 34


def test_gpu_page_draws_gpus_and_runtime_gauges_over_step_bands(seeder: Seeder) -> None:
    seeder.telemetry(seeder.sweep())

    at = run_app("gpu.py")
    figs = figures(at)

    util = figs["GPU utilisation"]
    assert traces(util)["gpu-host / 0"]["y"][:3] == [0.0, 2.0, 4.0]
    assert [s["type"] for s in util["layout"]["shapes"]] == ["rect"] * 4  # one band per load step
    assert [a["text"] for a in util["layout"]["annotations"]] == ["1 users", "2 users", "4 users", "8 users"]
    assert traces(figs["GPU memory used"])["gpu-host / 0"]["y"][:2] == [40.0, 41.0]
    assert traces(figs["GPU power"])["gpu-host / 0"]["y"][1] == 105.0
    assert traces(figs["KV-cache usage"])["vllm-like / vllm:kv_cache_usage_perc"]["y"][24] == 0.5
    running = traces(figs["Requests running and waiting"])
    assert set(running) == {"vllm-like / vllm:num_requests_running", "vllm-like / vllm:num_requests_waiting"}
    ollama = traces(figs["Ollama model size and VRAM share"])
    assert ollama["ollama-like / ollama:size_bytes"]["y"][0] == 2.0
    assert ollama["ollama-like / ollama:size_vram_bytes"]["y"][0] == 1.5
    preemptions = traces(figs["vLLM preemptions"])["vllm-like / scraper"]["y"]
    assert preemptions[:24] == [0.0] * 24 and preemptions[24:] == [2.0] * 23  # rates between 48 readings
    assert set(traces(figs["vLLM prefix-cache hit rate"])["vllm-like / scraper"]["y"]) == {0.75}
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download gpu_samples.csv", "Download runtime_samples.csv"]


def test_gpu_page_reads_the_prefix_cache_counters_of_vllm_before_0_10(seeder: Seeder) -> None:
    seeder.telemetry(seeder.sweep(), cache_prefix="vllm:gpu_prefix_cache")
    hit_rate = traces(figures(run_app("gpu.py"))["vLLM prefix-cache hit rate"])
    assert set(hit_rate["vllm-like / scraper"]["y"]) == {0.75}


def test_gpu_page_without_samples_says_how_to_get_them(seeder: Seeder) -> None:
    seeder.sweep()
    at = run_app("gpu.py")
    assert not at.get("plotly_chart") and "stampede agent" in at.info[0].value


def test_compare_shows_runs_at_equal_load_with_deltas_and_config_differences(seeder: Seeder) -> None:
    seeder.sweep(name="before", targets={"vllm-like": VLLM_LIKE})
    seeder.sweep(name="after", targets={"vllm-like": SLOW_VLLM}, started_at=T0 + timedelta(hours=1), slo={"ttft_ms": 1})

    at = run_app("compare.py")
    table = at.dataframe[0].value
    before, after = (c.split(" · ")[1] for c in table.columns if c.startswith("ttft_p99_ms · "))
    assert before.startswith("before") and after.startswith("after")
    assert list(table["load"]) == [1.0, 2.0, 4.0, 8.0]
    assert list(table[f"ttft_p99_ms · {after}"]) == [120.0, 140.0, 180.0, 260.0]
    assert list(table[f"ttft_p99_ms Δ% · {after}"]) == pytest.approx([100.0] * 4)
    assert list(table[f"output_tokens_per_s Δ% · {after}"]) == pytest.approx([0.0] * 4)
    assert len(traces(figures(at)["Output tokens/s vs load, by run"])) == 2
    headers = json.loads(at.dataframe[0].proto.columns)
    assert headers[f"ttft_p99_ms · {after}"]["label"] == f"TTFT p99 (ms) · {after}"
    assert headers[f"ttft_p99_ms Δ% · {after}"] == {
        "label": f"TTFT p99 (ms) Δ · {after}",
        "type_config": {"type": "number", "format": "%+.1f %%"},
    }

    diff = at.dataframe[1].value
    assert list(diff["setting"]) == ["sweep.name", "sweep.slo.ttft_ms"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download compare.csv", "Download config_diff.csv"]
