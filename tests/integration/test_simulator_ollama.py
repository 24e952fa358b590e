"""The Ollama profile's native API, driven by the official ``ollama`` client."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import ollama
import pytest

from simulator.profiles import Flavor, build_profile
from simulator.server import SimServer, ThreadedServer, serve_in_thread
from simulator.tokens import count_tokens

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROFILE = {"step_base_ms": 2.0, "step_per_seq_ms": 0.5, "load_ms": 200.0, "keep_alive_s": 0.6, "gpu_fraction": 0.75}


@pytest.fixture
def sim() -> Iterator[ThreadedServer]:
    server = serve_in_thread(SimServer(build_profile(Flavor.OLLAMA, PROFILE)))
    yield server
    server.stop()


def truths(sim: ThreadedServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sim.url}/sim/requests", timeout=10) as response:
        return list(json.loads(response.read())["requests"])


def test_chat_pays_the_model_load_once_and_reports_consistent_durations(sim: ThreadedServer) -> None:
    client = ollama.Client(host=sim.url)
    cold = client.chat(
        model="stampede-sim", messages=[{"role": "user", "content": "Hi there"}], options={"num_predict": 8}
    )
    warm = client.chat(
        model="stampede-sim:latest", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 8}
    )
    assert cold.load_duration == 200_000_000
    assert warm.load_duration is None  # Ollama omits a zero duration
    first, second = truths(sim)
    for reply, truth in ((cold, first), (warm, second)):
        assert reply.done and reply.done_reason == "length"
        assert reply.eval_count == truth["completion_tokens"] == 8
        assert reply.prompt_eval_count == truth["prompt_tokens"]
        assert count_tokens(reply.message.content or "") == 8
        parts = (reply.load_duration or 0) + (reply.prompt_eval_duration or 0) + (reply.eval_duration or 0)
        assert parts <= (reply.total_duration or 0) <= truth["finished_ns"] - truth["arrived_ns"]
        assert reply.eval_duration == pytest.approx(7 * 2.5e6, rel=0.01)
    assert first["first_token_ns"] - first["arrived_ns"] >= 200_000_000


def test_generate_streams_one_line_per_token_then_the_final_object(sim: ThreadedServer) -> None:
    client = ollama.Client(host=sim.url)
    parts = list(
        client.generate(model="stampede-sim", prompt="Tell me a story", stream=True, options={"num_predict": 6})
    )
    tokens, final = parts[:-1], parts[-1]
    assert [p.done for p in tokens] == [False] * 6
    assert all(count_tokens(p.response or "") == 1 for p in tokens)
    assert final.done and final.eval_count == 6 and final.prompt_eval_count == 4
    (truth,) = truths(sim)
    assert truth["stream"] and len(truth["token_written_ns"]) == 6


def test_a_prompt_longer_than_the_context_is_cut_not_refused(sim: ThreadedServer) -> None:
    limit = sim.server.profile.max_model_len
    prompt = "word " * (limit + 500)
    assert count_tokens(prompt) > limit
    reply = ollama.Client(host=sim.url).generate(model="stampede-sim", prompt=prompt, options={"num_predict": 3})
    assert reply.done_reason == "length" and reply.eval_count == 3
    assert reply.prompt_eval_count == limit


def test_ps_shows_partial_offload_until_keep_alive_unloads(sim: ThreadedServer) -> None:
    client = ollama.Client(host=sim.url)
    assert client.ps().models == []
    client.generate(model="stampede-sim", prompt="x", options={"num_predict": 1})
    (loaded,) = client.ps().models
    assert loaded.model == "stampede-sim:latest"
    assert loaded.size is not None and loaded.size_vram == int(loaded.size * 0.75) < loaded.size
    time.sleep(0.7)
    assert client.ps().models == []


def test_a_request_without_prompt_only_loads_the_model(sim: ThreadedServer) -> None:
    client = ollama.Client(host=sim.url)
    started = time.monotonic()
    reply = client.generate(model="stampede-sim")
    assert time.monotonic() - started >= 0.2
    assert reply.done and reply.done_reason == "load" and reply.response == ""
    assert [m.model for m in client.ps().models] == ["stampede-sim:latest"]
    assert client.chat(model="stampede-sim", messages=[]).done_reason == "load"


def test_list_version_and_unknown_model(sim: ThreadedServer) -> None:
    client = ollama.Client(host=sim.url)
    assert [m.model for m in client.list().models] == ["stampede-sim:latest"]
    with urllib.request.urlopen(f"{sim.url}/api/version", timeout=10) as response:
        assert json.loads(response.read())["version"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="llama9", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "llama9" not found, try pulling it first'
