"""The OpenAI-compatible routes of every profile, driven by the official ``openai`` SDK.

Each server runs in-process on a loopback port; ground truth from ``/sim/requests`` must agree with the
usage the client was given and with what the client saw on the wire.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from simulator.profiles import Flavor, build_profile
from simulator.server import SimServer, ThreadedServer, serve_in_thread
from simulator.tokens import count_tokens

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FAST = {"step_base_ms": 2.0, "step_per_seq_ms": 0.1, "load_ms": 50.0, "models": ["stampede-sim", "other"]}


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def truth_of(sim: ThreadedServer, response_id: str) -> dict[str, Any]:
    """The ground-truth record of a response, matched by the numeric id the simulator put in its id."""
    request_id = int(response_id.rsplit("-", 1)[1])
    _, body = get_json(f"{sim.url}/sim/requests?since={request_id - 1}")
    return next(r for r in body["requests"] if r["id"] == request_id)


@pytest.fixture(scope="module", params=[f.value for f in Flavor])
def sim(request: pytest.FixtureRequest) -> Iterator[ThreadedServer]:
    server = serve_in_thread(SimServer(build_profile(Flavor(request.param), FAST)))
    yield server
    server.stop()


@pytest.fixture
def client(sim: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)


MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count to five, please."}]


def test_chat_completion_usage_matches_ground_truth(sim: ThreadedServer, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="stampede-sim", messages=MESSAGES, max_tokens=12)
    assert reply.usage is not None
    truth = truth_of(sim, reply.id)
    assert reply.usage.completion_tokens == truth["completion_tokens"] == 12
    assert reply.usage.prompt_tokens == truth["prompt_tokens"] == 7
    assert count_tokens(reply.choices[0].message.content or "") == 12
    assert reply.choices[0].finish_reason == "length"


def test_streamed_chat_sends_one_chunk_per_token_then_usage(sim: ThreadedServer, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="other", messages=MESSAGES, max_tokens=20, stream=True, stream_options={"include_usage": True}
    )
    received_ns: list[int] = []
    usage = None
    response_id = ""
    for chunk in stream:
        response_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            received_ns.append(time.monotonic_ns())
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None
    truth = truth_of(sim, response_id)
    assert len(received_ns) == usage.completion_tokens == truth["completion_tokens"] == 20
    assert truth["model"] == "other"
    # Same host, same monotonic clock: each token was seen after it was written, and soon after, not
    # in a batch at the end (whose median delay would be half the stream). Medians, as one stall of a
    # shared CI machine (tens of ms) must not fail the test; the bounds on the maxima catch batching.
    delays_ns = [seen - written for written, seen in zip(truth["token_written_ns"], received_ns, strict=True)]
    assert min(delays_ns) >= 0
    assert statistics.median(delays_ns) < 10_000_000 and max(delays_ns) < 150_000_000, delays_ns
    lateness_ns = [w - s for w, s in zip(truth["token_written_ns"], truth["token_scheduled_ns"], strict=True)]
    assert statistics.median(lateness_ns) < 5_000_000 and max(lateness_ns) < 150_000_000, lateness_ns


def sse_events(url: str, body: dict[str, Any]) -> list[Any]:
    """The JSON payloads of a streamed response, in order, ``[DONE]`` as the string itself."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        lines = response.read().decode().split("\n\n")
    payloads = [line.removeprefix("data: ") for line in lines if line]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def test_streamed_chat_takes_the_flavours_own_chunk_shapes(sim: ThreadedServer) -> None:
    body = {"model": "stampede-sim", "messages": MESSAGES, "max_tokens": 3, "stream": True, "stream_options": {}}
    events = sse_events(f"{sim.url}/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    choices = [e["choices"][0] if e["choices"] else None for e in events[:-1]]
    flavor = sim.server.profile.flavor
    if flavor is Flavor.VLLM:
        # A role-only chunk and three tokens, the last with the finish and the fingerprint; no usage, as an
        # empty stream_options leaves include_usage false.
        assert choices[0]["delta"] == {"role": "assistant", "content": ""}
        assert [c["delta"] for c in choices[1:4]] == [{"content": c["delta"]["content"]} for c in choices[1:4]]
        assert choices[3]["finish_reason"] == "length" and choices[3]["stop_reason"] is None
        assert len(choices) == 4 and events[3]["system_fingerprint"].startswith("vllm-")
    elif flavor is Flavor.LLAMACPP:
        assert choices[0]["delta"] == {"role": "assistant", "content": None}
        assert all(set(c["delta"]) == {"content"} and c["finish_reason"] is None for c in choices[1:4])
        assert choices[4] == {"finish_reason": "length", "index": 0, "delta": {}}
        assert events[4]["usage"]["completion_tokens"] == 3 and events[4]["timings"]["predicted_n"] == 3
        assert len(choices) == 5
    else:
        assert all(c["delta"]["role"] == "assistant" for c in choices)
        assert [c["finish_reason"] for c in choices] == [None, None, None, "length"]
        assert choices[3]["delta"]["content"] == "" and "logprobs" not in choices[0]
        assert {e["system_fingerprint"] for e in events[:-1]} == {"fp_ollama"}
        assert len(choices) == 4  # Ollama sends usage only when include_usage is true


def test_completions_stream_and_not(sim: ThreadedServer, client: openai.OpenAI) -> None:
    whole = client.completions.create(model="stampede-sim", prompt="Once upon a time", max_tokens=5)
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    assert count_tokens(whole.choices[0].text) == 5
    pieces = [
        c.choices[0].text
        for c in client.completions.create(model="stampede-sim", prompt="Once", max_tokens=7, stream=True)
        if c.choices and c.choices[0].text  # llama-server and Ollama end with an empty finish chunk
    ]
    assert len(pieces) == 7 and all(count_tokens(p) == 1 for p in pieces)


def test_models_lists_the_served_names(sim: ThreadedServer, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    suffix = ":latest" if sim.server.profile.flavor is Flavor.OLLAMA else ""
    assert ids == [f"stampede-sim{suffix}", f"other{suffix}"]


def test_unknown_model_is_404_in_the_servers_own_shape(sim: ThreadedServer, client: openai.OpenAI) -> None:
    flavor = sim.server.profile.flavor
    if flavor is Flavor.LLAMACPP:
        # llama-server serves one model under whatever name the request gives.
        reply = client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=1)
        assert reply.model == "no-such-model"
        return
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    error = caught.value.body
    assert isinstance(error, dict) and "no-such-model" in error["message"]
    assert error["type"] == {Flavor.VLLM: "NotFoundError", Flavor.OLLAMA: "not_found_error"}[flavor]


def test_what_does_not_fit_the_context_is_handled_as_the_server_does(
    sim: ThreadedServer, client: openai.OpenAI
) -> None:
    limit = sim.server.profile.max_model_len
    flavor = sim.server.profile.flavor
    long_prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * limit}]
    if flavor is Flavor.VLLM:
        reply = client.chat.completions.create(
            model="stampede-sim", messages=MESSAGES, max_tokens=limit, extra_body={"ignore_eos": True}
        )
        assert reply.usage is not None and reply.usage.completion_tokens == limit - 7
        assert reply.choices[0].finish_reason == "length"
        with pytest.raises(
            openai.BadRequestError, match=rf"max_tokens={limit + 1} cannot be greater than max_model_len"
        ):
            client.chat.completions.create(model="stampede-sim", messages=MESSAGES, max_tokens=limit + 1)
        with pytest.raises(openai.BadRequestError, match="Please reduce the length of the input prompt") as caught:
            client.chat.completions.create(model="stampede-sim", messages=long_prompt)
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input_tokens"
    elif flavor is Flavor.LLAMACPP:
        reply = client.chat.completions.create(
            model="stampede-sim", messages=MESSAGES, max_tokens=limit, extra_body={"ignore_eos": True}
        )
        assert reply.usage is not None and reply.usage.completion_tokens == limit - 7
        assert reply.choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="stampede-sim", messages=long_prompt)
        error = caught.value.body
        assert isinstance(error, dict) and error["type"] == "exceed_context_size_error"
        assert error["n_ctx"] == limit and error["n_prompt_tokens"] > limit
    else:
        reply = client.chat.completions.create(model="stampede-sim", messages=long_prompt, max_tokens=2)
        assert reply.usage is not None and reply.usage.prompt_tokens == limit


def test_bad_requests_are_400_in_the_servers_shape(sim: ThreadedServer, client: openai.OpenAI) -> None:
    vllm = sim.server.profile.flavor is Flavor.VLLM
    with pytest.raises(
        openai.BadRequestError, match="max_tokens must be at least 1, got 0" if vllm else "must be a positive integer"
    ):
        client.chat.completions.create(model="stampede-sim", messages=MESSAGES, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="stampede-sim", messages=MESSAGES, extra_headers={"X-Sim-Fault": "boom"})
    bad_json = urllib.request.Request(f"{sim.url}/v1/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(bad_json, timeout=10)
    assert caught.value.code == 400


def test_vllm_requires_the_api_key_on_v1_routes_only() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, FAST), api_key="sekret"))
    try:
        assert get_json(f"{sim.url}/v1/models") == (401, {"error": "Unauthorized"})
        assert get_json(f"{sim.url}/v1/models", {"Authorization": "Bearer wrong"})[0] == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{sim.url}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sekret", max_retries=0)
        assert good.chat.completions.create(model="stampede-sim", messages=MESSAGES, max_tokens=2).usage
        assert get_json(f"{sim.url}/health")[0] == 200
    finally:
        sim.stop()


def metric_samples(url: str) -> list[Any]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_values(url: str) -> dict[str, float]:
    """Each series without buckets, summed over its labels."""
    values: dict[str, float] = {}
    for sample in metric_samples(url):
        if not sample.labels.get("le"):
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_vllm_metrics_carry_vllms_labels_and_bucket_bounds() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, FAST)))
    try:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(model="stampede-sim", messages=MESSAGES, max_tokens=3)
        samples = metric_samples(sim.url)
        assert {s.labels["engine"] for s in samples} == {"0"}
        assert {s.labels["model_name"] for s in samples} == {"stampede-sim"}
        reasons = {s.labels["finished_reason"]: s.value for s in samples if s.name == "vllm:request_success_total"}
        assert reasons == {"abort": 0, "error": 0, "length": 1, "repetition": 0, "stop": 0}
        bounds = {
            name: max(float(s.labels["le"]) for s in samples if s.name == f"{name}_bucket" and s.labels["le"] != "+Inf")
            for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds")
        }
        assert bounds == {"vllm:time_to_first_token_seconds": 2560.0, "vllm:inter_token_latency_seconds": 80.0}
        values = metric_values(sim.url)
        assert values["vllm:request_prefill_time_seconds_count"] == 1
        assert values["vllm:request_decode_time_seconds_count"] == 1
    finally:
        sim.stop()


def test_vllm_counts_prefix_cache_hits_for_a_shared_system_prompt() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, FAST)))
    system = " ".join(f"rule{i}" for i in range(64))  # 64 tokens, 1 for the role: 4 full blocks of 16
    try:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
        for question in ("Count to five, please.", "Name three colours."):
            messages: list[ChatCompletionMessageParam] = [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ]
            client.chat.completions.create(model="stampede-sim", messages=messages, max_tokens=2)
        values = metric_values(sim.url)
        prompts = (1 + 64 + 1 + 6) + (1 + 64 + 1 + 4)  # role and text tokens of each message
        assert values["vllm:prefix_cache_queries_total"] == prompts
        assert values["vllm:prefix_cache_hits_total"] == 64  # the second prompt's first 4 blocks
    finally:
        sim.stop()


def test_vllm_metrics_count_preemptions_when_outputs_outgrow_the_kv_cache() -> None:
    profile = build_profile(Flavor.VLLM, {**FAST, "kv_budget_tokens": 1_000, "max_model_len": 1_000})
    sim = serve_in_thread(SimServer(profile))
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    try:
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(
                lambda _: client.chat.completions.create(
                    model="stampede-sim", messages=MESSAGES, max_tokens=500, extra_body={"ignore_eos": True}
                ),
                range(3),
            ))  # fmt: skip
        assert [r.usage.completion_tokens for r in replies if r.usage] == [500, 500, 500]
        values = metric_values(sim.url)
        assert values["vllm:num_preemptions_total"] >= 1  # 3 x 507 tokens do not fit in 1,000
        assert values["vllm:kv_cache_usage_perc"] == 0
        assert values["vllm:prompt_tokens_total"] == 3 * 7  # each prompt once, however often recomputed
        # Inter-token latency takes in a preempted request's wait: its gaps add up to its decode time.
        _, truth = get_json(f"{sim.url}/sim/requests")
        decode_s = sum((t["token_scheduled_ns"][-1] - t["token_scheduled_ns"][0]) / 1e9 for t in truth["requests"])
        assert values["vllm:inter_token_latency_seconds_sum"] == pytest.approx(decode_s, rel=0.01)
    finally:
        sim.stop()


def test_vllm_metrics_show_requests_waiting_when_the_kv_budget_is_full() -> None:
    # With preemption off, vLLM-like requests reserve prompt and output at admission, and wait for room.
    profile = build_profile(
        Flavor.VLLM, {**FAST, "kv_budget_tokens": 2_000, "max_model_len": 1_000, "preemption": False}
    )
    sim = serve_in_thread(SimServer(profile))
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    streams = [
        client.chat.completions.create(
            model="stampede-sim", messages=MESSAGES, max_tokens=900, stream=True, extra_body={"ignore_eos": True}
        )
        for _ in range(4)
    ]
    try:
        time.sleep(0.1)
        values = metric_values(sim.url)
        assert values["vllm:num_requests_running"] == 2
        assert values["vllm:num_requests_waiting"] == 2
        assert values["vllm:kv_cache_usage_perc"] == pytest.approx(2 * 907 / 2_000)
        assert values["vllm:generation_tokens_total"] > 0
        assert values["vllm:time_to_first_token_seconds_count"] == 2
        assert values["vllm:request_success_total"] == 0  # stop, length and abort are there from the start
        assert values["vllm:request_queue_time_seconds_count"] == 0
    finally:
        for stream in streams:
            stream.close()
        sim.stop()


def test_replicas_each_add_slots_behind_a_least_loaded_balancer() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, {**FAST, "replicas": 2, "max_running": 1})))
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
    streams = []
    try:
        for expected_running, expected_waiting in ((1, 0), (2, 0), (2, 1)):
            streams.append(
                client.completions.create(
                    model="stampede-sim", prompt="x", max_tokens=900, stream=True, extra_body={"ignore_eos": True}
                )
            )
            time.sleep(0.05)
            values = metric_values(sim.url)
            assert values["vllm:num_requests_running"] == expected_running
            assert values["vllm:num_requests_waiting"] == expected_waiting
    finally:
        for stream in streams:
            stream.close()
        sim.stop()


def test_llamacpp_loads_at_start_and_serves_metrics_only_when_asked() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.LLAMACPP, {**FAST, "load_ms": 300.0})))
    try:
        assert get_json(f"{sim.url}/health") == (
            503,
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
        )
        status, body = get_json(f"{sim.url}/metrics")
        assert status == 501 and "Start it with `--metrics`" in body["error"]["message"]
        time.sleep(0.35)
        assert get_json(f"{sim.url}/health") == (200, {"status": "ok"})
    finally:
        sim.stop()


def test_llamacpp_reports_timings_slots_and_its_metrics() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.LLAMACPP, FAST), llamacpp_metrics=True))
    try:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="stampede-sim", messages=MESSAGES, max_tokens=6)
        timings = json.loads(raw.content)["timings"]
        assert timings["prompt_n"] == 7 and timings["predicted_n"] == 6
        assert timings["predicted_ms"] == pytest.approx(5 * (2.0 + 0.1), rel=0.01)
        stream = client.chat.completions.create(model="stampede-sim", messages=MESSAGES, max_tokens=400, stream=True)
        time.sleep(0.05)
        status, slots = get_json(f"{sim.url}/slots")
        assert status == 200 and len(slots) == 4
        assert [s["is_processing"] for s in slots] == [True, False, False, False]
        values = metric_values(sim.url)
        assert values["llamacpp:requests_processing"] == 1
        assert values["llamacpp:tokens_predicted_total"] >= 6
        stream.close()
        assert get_json(f"{sim.url}/health") == (200, {"status": "ok"})
    finally:
        sim.stop()
