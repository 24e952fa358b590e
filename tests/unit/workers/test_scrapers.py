"""Runtime scrapers on recorded responses (fixtures/): vLLM and llama.cpp ``/metrics`` text,
llama.cpp ``/slots`` and Ollama ``/api/ps`` JSON, hand-written in the formats those servers emit.
No network here; tests/integration/test_fleet_scrapers.py serves the same files over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers import scrapers

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def values(name: str, **kwargs: object) -> dict[str, float]:
    text = (FIXTURES / name).read_text()
    return {metric: value for metric, _labels, value in scrapers.prometheus_values(text, **kwargs)}  # type: ignore[arg-type]


def test_vllm_keeps_queue_and_kv_cache_gauges_and_token_preemption_and_prefix_cache_counters() -> None:
    found = scrapers.prometheus_values((FIXTURES / "vllm_metrics.txt").read_text(), wanted=scrapers.VLLM_METRICS)
    assert {(m, v) for m, _, v in found} == {
        ("vllm:num_requests_running", 48.0),
        ("vllm:num_requests_waiting", 17.0),
        ("vllm:kv_cache_usage_perc", 0.9134),
        ("vllm:num_preemptions_total", 3.0),
        ("vllm:generation_tokens_total", 1284519.0),  # checked against the client's count per step
        ("vllm:prefix_cache_queries_total", 524288.0),
        ("vllm:prefix_cache_hits_total", 393216.0),
    }
    assert found[0][1] == {"engine": "0", "model_name": MODEL}


def test_vllm_before_v0_10_reports_gpu_cache_usage() -> None:
    assert values("vllm_metrics_v0.txt", wanted=scrapers.VLLM_METRICS)["vllm:gpu_cache_usage_perc"] == 0.3125


def test_llamacpp_metrics_keep_every_llamacpp_series() -> None:
    found = values("llamacpp_metrics.txt", prefix=scrapers.LLAMACPP_PREFIX)
    assert found["llamacpp:requests_processing"] == 3
    assert found["llamacpp:kv_cache_usage_ratio"] == 0.41
    assert found["llamacpp:tokens_predicted_total"] == 25911
    assert len(found) == 8


def test_llamacpp_slots_show_busy_slots_and_tokens_decoded() -> None:
    found = scrapers.llamacpp_slot_values(json.loads((FIXTURES / "llamacpp_slots.json").read_text()))
    busy = {labels["slot"]: v for m, labels, v in found if m == "llamacpp_slot:is_processing"}
    decoded = {labels["slot"]: v for m, labels, v in found if m == "llamacpp_slot:n_decoded"}
    assert busy == {"0": 1.0, "1": 1.0, "2": 0.0}
    assert decoded == {"0": 125.0, "1": 8.0, "2": 0.0}


def test_llamacpp_slots_of_newer_servers_list_their_next_token() -> None:
    # llama-server as llama-cpp-python 0.3.36 vendors it: next_token is a list; an idle slot that served
    # nothing yet has none.
    slots = [
        {"id": 0, "n_ctx": 2048, "is_processing": True, "next_token": [{"n_remain": 90, "n_decoded": 106}]},
        {"id": 1, "n_ctx": 2048, "is_processing": False},
    ]
    found = scrapers.llamacpp_slot_values(slots)
    decoded = {labels["slot"]: v for m, labels, v in found if m == "llamacpp_slot:n_decoded"}
    busy = {labels["slot"]: v for m, labels, v in found if m == "llamacpp_slot:is_processing"}
    assert (decoded, busy) == ({"0": 106.0}, {"0": 1.0, "1": 0.0})


def test_ollama_ps_shows_partial_cpu_offload() -> None:
    found = scrapers.ollama_ps_values(json.loads((FIXTURES / "ollama_ps.json").read_text()))
    fraction = {labels["model"]: v for m, labels, v in found if m == "ollama:vram_fraction"}
    assert fraction["llama3.1:8b"] == 1.0
    assert fraction["llama3.1:70b"] == pytest.approx(22548578304 / 48393752576)  # layers on the CPU
    sizes = {(m, labels["model"]): v for m, labels, v in found if m != "ollama:vram_fraction"}
    assert sizes[("ollama:size_bytes", "llama3.1:70b")] == 48393752576


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError):
        scrapers.scrape_values("tgi", "http://127.0.0.1:1")
