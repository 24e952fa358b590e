"""The simulator's vLLM profile held to a real vLLM: the same requests to both, answers compared field by field.

A difference fails with the field named. What is compared by type only (ids, times, text, the
fingerprint's build hash) and what the simulator does differently on purpose is in the README's
simulator section.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from tests.realservers.vllm_server import VLLM_TEST_TIMEOUT_S, VllmServer
from tests.realservers.vllm_shapes import Reply, call, chunk_kind, differences, label_values, series
from workers.scrapers import VLLM_METRICS

pytest_plugins = ["tests.realservers.vllm_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(VLLM_TEST_TIMEOUT_S)]

# Protocol constants: compared by value, not only by type.
CONSTANTS = frozenset(
    {
        ".object", ".model", ".choices[].index", ".choices[].delta.role", ".choices[].message.role",
        ".choices[].finish_reason", ".choices[].stop_reason", ".error", ".error.type", ".error.code",
        ".error.param", ".error.message", ".data[].object", ".data[].id", ".data[].owned_by",
        ".data[].max_model_len", ".data[].permission[].object", ".usage.completion_tokens",
    }
)  # fmt: skip
LEGACY_NAMES = {
    # Read by Stampede for vLLM before 0.10, which named them so; 0.32 has the new names only.
    "vllm:gpu_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits_total",
}
LONG_PROMPT = "the city " * 1500  # over 2,048 tokens for vLLM's tokenizer and the simulator's alike


@pytest.fixture(scope="module")
def sim(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    process = start_simulator(
        "vllm", port, log, "--model", vllm_server.model, "--api-key", vllm_server.api_key,
        "--max-model-len", str(vllm_server.max_model_len),
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def both(
    vllm_server: VllmServer, sim: str, path: str, body: dict[str, Any] | None = None, key: bool = True
) -> tuple[Reply, Reply]:
    api_key = vllm_server.api_key if key else None
    return call(vllm_server.url, path, body, api_key), call(sim, path, body, api_key)


def compare(what: str, real: Any, simulated: Any) -> list[str]:
    return differences(what, real, simulated, CONSTANTS)


def chat(max_tokens: int = 16, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    return {"model": "tiny", "messages": messages, "max_tokens": max_tokens, "ignore_eos": True} | extra


def completion(**extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": True, **extra}


STREAMS = {
    "chat stream with usage": ("/v1/chat/completions", chat(stream=True, stream_options={"include_usage": True})),
    "chat stream": ("/v1/chat/completions", chat(stream=True)),
    "chat stream, empty stream_options": ("/v1/chat/completions", chat(stream=True, stream_options={})),
    "completion stream with usage": (
        "/v1/completions",
        completion(stream=True, stream_options={"include_usage": True}),
    ),
}


@pytest.mark.parametrize("case", STREAMS)
def test_stream_chunks_have_vllms_shapes(vllm_server: VllmServer, sim: str, case: str) -> None:
    path, body = STREAMS[case]
    real, simulated = both(vllm_server, sim, path, body)
    assert (real.status, simulated.status) == (200, 200)
    found = compare(f"{case}: header", {"content-type": real.headers["content-type"]},
                    {"content-type": simulated.headers["content-type"]})  # fmt: skip
    # vLLM runs with --enable-request-id-headers here: the simulator always sends the id (see the README).
    if ("x-request-id" in real.headers) != ("x-request-id" in simulated.headers):
        found.append(f"{case}: header x-request-id: present for vLLM {'x-request-id' in real.headers}")
    real_events, sim_events = real.events(), simulated.events()
    real_kinds = [chunk_kind(e) for e in real_events]
    sim_kinds = [chunk_kind(e) for e in sim_events]
    # A vLLM whose API server falls behind its engine merges tokens into one chunk (seen on a loaded
    # machine: all of them into the finish chunk), so content chunks may be missing; the rest may not.
    assert _framing(sim_kinds) == _framing(real_kinds), f"{case}: chunk kinds: vLLM {real_kinds}, the simulator"
    assert "content" in sim_kinds
    for event, kind in zip(sim_events, sim_kinds, strict=True):
        if kind != "done" and kind in real_kinds:  # each of the simulator's chunks against vLLM's first of its kind
            found += compare(f"{case}: {kind} chunk", real_events[real_kinds.index(kind)], event)
    found = list(dict.fromkeys(found))
    assert found == [], "\n".join(found)


def _framing(kinds: list[str]) -> list[str]:
    """The chunk kinds in order, without the content chunks."""
    return [k for k in kinds if k != "content"]


WHOLE = [
    ("/v1/chat/completions", chat()),
    ("/v1/completions", completion()),
    ("/v1/completions", {k: v for k, v in completion().items() if k != "max_tokens"}),  # vLLM's default: 16
]


@pytest.mark.parametrize("path, body", WHOLE)
def test_whole_responses_have_vllms_shape(vllm_server: VllmServer, sim: str, path: str, body: dict[str, Any]) -> None:
    real, simulated = both(vllm_server, sim, path, body)
    assert (real.status, simulated.status) == (200, 200)
    found = compare(f"{path} body", real.json(), simulated.json())
    assert found == [], "\n".join(found)


def test_models_list_has_vllms_shape(vllm_server: VllmServer, sim: str) -> None:
    real, simulated = both(vllm_server, sim, "/v1/models")
    assert (real.status, simulated.status) == (200, 200)
    found = compare("/v1/models", real.json(), simulated.json())
    assert found == [], "\n".join(found)


ERRORS = {
    "no API key": ("/v1/chat/completions", chat(), False),
    "no API key on /v1/models": ("/v1/models", None, False),
    "unknown model": ("/v1/chat/completions", chat(model="no-such-model"), True),
    "prompt over max_model_len": (
        "/v1/chat/completions",
        {**chat(), "messages": [{"role": "user", "content": LONG_PROMPT}]},
        True,
    ),
    "max_tokens over max_model_len": ("/v1/chat/completions", chat(max_tokens=3000), True),
    "max_tokens 0": ("/v1/chat/completions", chat(max_tokens=0), True),
}


@pytest.mark.parametrize("case", ERRORS)
def test_error_answers_match_vllms_status_and_body(vllm_server: VllmServer, sim: str, case: str) -> None:
    path, body, key = ERRORS[case]
    real, simulated = both(vllm_server, sim, path, body, key)
    assert simulated.status == real.status, f"{case}: status"
    found = compare(f"{case}: body", real.json(), simulated.json())
    assert found == [], "\n".join(found)


def test_metrics_the_simulator_exports_exist_in_vllm_with_the_same_labels(vllm_server: VllmServer, sim: str) -> None:
    # Some traffic first, so every series either server creates lazily exists.
    both(vllm_server, sim, "/v1/chat/completions", chat())
    real_text, sim_text = call(vllm_server.url, "/metrics").body.decode(), call(sim, "/metrics").body.decode()
    real, simulated = series(real_text), series(sim_text)
    found = []
    for name, promised in sorted(simulated.items()):
        actual = real.get(name)
        if actual is None:
            found.append(f"{name}: exported by the simulator, not by vLLM")
        elif actual != promised:
            found.append(f"{name}: vLLM {actual}, the simulator {promised}")
    reasons = ("vllm:request_success_total", "finished_reason")
    if label_values(real_text, *reasons) != label_values(sim_text, *reasons):
        found.append(f"finished_reason values: vLLM {label_values(real_text, *reasons)}, "
                     f"the simulator {label_values(sim_text, *reasons)}")  # fmt: skip
    # What Stampede scrapes from vLLM, the simulator must export too.
    found += [f"{name}: Stampede reads it, vLLM exports it, the simulator lacks it"
              for name in sorted(VLLM_METRICS & real.keys() - simulated.keys())]  # fmt: skip
    assert found == [], "\n".join(found)
    assert VLLM_METRICS - real.keys() == LEGACY_NAMES
