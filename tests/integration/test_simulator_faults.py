"""Each injected fault, as a client sees it on the wire, and in the ground truth."""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from simulator.profiles import Flavor, build_profile
from simulator.server import SimServer, ThreadedServer, serve_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROFILE = {"step_base_ms": 2.0, "step_per_seq_ms": 0.1, "faults": {"stall_s": 0.4, "retry_after_s": 7}}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": "stampede-sim", "messages": MESSAGES, "max_tokens": 10, "stream": True}


@pytest.fixture(scope="module")
def vllm() -> Iterator[ThreadedServer]:
    server = serve_in_thread(SimServer(build_profile(Flavor.VLLM, PROFILE)))
    yield server
    server.stop()


def last_truth(sim: ThreadedServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim.url}/sim/requests", timeout=10) as response:
        return dict(json.loads(response.read())["requests"][-1])


def sse_lines(sim: ThreadedServer, fault: str, path: str = "/v1/chat/completions", body: Any = CHAT) -> list[str]:
    with httpx.stream("POST", sim.url + path, json=body, headers={"X-Sim-Fault": fault}, timeout=10) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("http_429", openai.RateLimitError, 429),
        ("http_500", openai.InternalServerError, 500),
        ("http_503", openai.InternalServerError, 503),
    ],
)
def test_http_faults_answer_with_their_status(
    vllm: ThreadedServer, fault: str, error: type[openai.APIStatusError], status: int
) -> None:
    client = openai.OpenAI(
        base_url=f"{vllm.url}/v1", api_key="x", max_retries=0, default_headers={"X-Sim-Fault": fault}
    )
    with pytest.raises(error) as caught:
        client.chat.completions.create(model="stampede-sim", messages=MESSAGES)
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "7"
    assert (last_truth(vllm)["status"], last_truth(vllm)["outcome"]) == (status, "error")


def test_reset_cuts_the_connection_after_the_configured_tokens(vllm: ThreadedServer) -> None:
    client = openai.OpenAI(base_url=f"{vllm.url}/v1", api_key="x", max_retries=0)
    received = []
    with pytest.raises(openai.APIConnectionError):
        stream = client.chat.completions.create(
            model="stampede-sim", messages=MESSAGES, max_tokens=10, stream=True, extra_headers={"X-Sim-Fault": "reset"}
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk)
    assert len(received) == 3
    truth = last_truth(vllm)
    assert truth["outcome"] == "reset" and len(truth["token_written_ns"]) == 3


def test_stall_sends_no_bytes_for_the_stall_then_resumes(vllm: ThreadedServer) -> None:
    arrivals = []
    with httpx.stream("POST", vllm.url + "/v1/chat/completions", json=CHAT, headers={"X-Sim-Fault": "stall"}) as r:
        for line in r.iter_lines():
            if '"delta":{"content":' in line:  # a token, not vLLM's role-only first chunk
                arrivals.append(time.monotonic())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 10
    others = gaps[:2] + gaps[3:]
    # The stall is the one long gap; medians and a loose maximum, so one hiccup of a shared machine passes.
    assert gaps[2] >= 0.4 and statistics.median(others) < 0.05 and max(others) < 0.3, gaps
    truth = last_truth(vllm)
    assert truth["token_written_ns"][3] - truth["token_written_ns"][2] >= 400_000_000


def test_malformed_chunk_is_invalid_json_and_the_stream_goes_on(vllm: ThreadedServer) -> None:
    events = [line.removeprefix("data: ") for line in sse_lines(vllm, "malformed")]
    bad = []
    for event in events[:-1]:
        try:
            json.loads(event)
        except json.JSONDecodeError:
            bad.append(event)
    # vLLM's role chunk, three tokens, the bad chunk, seven tokens, [DONE]
    assert len(bad) == 1 and events.index(bad[0]) == 4
    assert len(events) == 13 and events[-1] == "[DONE]"


def test_truncate_ends_without_done_on_sse_and_without_the_final_ollama_object() -> None:
    for flavor, path, body in (
        (Flavor.VLLM, "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}),
        (Flavor.OLLAMA, "/api/chat", {**CHAT, "options": {"num_predict": 10}}),
    ):
        sim = serve_in_thread(SimServer(build_profile(flavor, {**PROFILE, "load_ms": 0})))
        try:
            lines = sse_lines(sim, "truncate", path, body)
            intact = sse_lines(sim, "", path, body)
        finally:
            sim.stop()
        # vLLM: a role chunk, ten tokens, then usage and [DONE]; Ollama: ten tokens, then the final object
        assert len(lines) == (11 if flavor is Flavor.VLLM else 10)
        assert len(intact) == (13 if flavor is Flavor.VLLM else 11)
        assert "[DONE]" not in lines[-1] and '"done":true' not in lines[-1]


def test_rate_based_faults_replay_with_the_seed() -> None:
    def statuses(seed: int) -> list[int]:
        profile = build_profile(Flavor.VLLM, {**PROFILE, "seed": seed, "faults": {"rates": {"http_500": 0.5}}})
        sim = serve_in_thread(SimServer(profile))
        try:
            body = {**CHAT, "stream": False, "max_tokens": 1}
            return [httpx.post(sim.url + "/v1/chat/completions", json=body).status_code for _ in range(20)]
        finally:
            sim.stop()

    first = statuses(11)
    assert first == statuses(11)
    assert 3 <= first.count(500) <= 17 and set(first) == {200, 500}
