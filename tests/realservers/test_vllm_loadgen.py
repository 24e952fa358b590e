"""Stampede's load against a real vLLM: every request stored once, with the tokens the server counted.

The server's own counters are the reference: the requests it finished and the prompt and output
tokens it processed during a run must equal, to the token, what Stampede stored for that run.
The server wants an API key; these runs send the right one, and it must land nowhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stampede.records import Outcome
from tests.realservers.vllm_helpers import (
    OUTPUT_TOKENS,
    PREFIX_HITS,
    PREFIX_QUERIES,
    PROMPT_TOKENS,
    REQUESTS,
    Finished,
    counters,
    deltas,
    locust,
    sweep,
)
from tests.realservers.vllm_server import VLLM_TEST_TIMEOUT_S, VllmServer

pytest_plugins = ["tests.realservers.vllm_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(VLLM_TEST_TIMEOUT_S)]

SCRAPED = {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"}


def assert_matches_server(finished: Finished, server_deltas: dict[str, float], api_key: str) -> None:
    """Zero errors, one row per request the server finished, and the server's token counts."""
    rows = finished.rows()
    errors = [(r.outcome, r.http_status, r.error) for r in rows if r.outcome != Outcome.OK.value]
    assert errors == []
    assert len(rows) == server_deltas[REQUESTS]
    assert sum(r.prompt_tokens or 0 for r in rows) == server_deltas[PROMPT_TOKENS]
    assert sum(r.output_tokens or 0 for r in rows) == server_deltas[OUTPUT_TOKENS]
    assert api_key.encode() not in finished.everything_written()


def test_openai_chat_user_stores_each_request_with_the_servers_token_counts(
    vllm_server: VllmServer, tmp_path: Path
) -> None:
    before = counters(vllm_server)
    finished, sent = locust(
        tmp_path, vllm_server, "-u", "4", "-r", "4", "-t", "8s", "--model", vllm_server.model,
        "--max-tokens", "32", "OpenAIChatUser", api_key=vllm_server.api_key,
    )  # fmt: skip
    server = deltas(before, counters(vllm_server), REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS)
    assert sent >= 4
    assert len(finished.rows()) == sent
    assert_matches_server(finished, server, vllm_server.api_key)


def test_closed_loop_sweep_matches_the_server_and_samples_its_metrics(vllm_server: VllmServer, tmp_path: Path) -> None:
    before = counters(vllm_server)
    finished = sweep(
        tmp_path, vllm_server, "--steps", "1,4", "--step-duration-s", "8", "--warmup-s", "1",
        "--max-tokens", "32", "--ignore-eos", api_key=vllm_server.api_key,
    )  # fmt: skip
    server = deltas(before, counters(vllm_server), REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS)
    assert_matches_server(finished, server, vllm_server.api_key)
    rows = finished.rows()
    assert {r.step_index for r in rows} == {0, 1}
    assert {r.output_tokens for r in rows} == {32}  # --ignore-eos: exactly --max-tokens, as vLLM counted them
    sampled = {s.metric for s in finished.runtime_samples()}
    assert sampled >= SCRAPED
    running = [s.value for s in finished.runtime_samples() if s.metric == "vllm:num_requests_running"]
    assert max(running) >= 1  # sampled while the load ran, not only before or after it


def test_open_loop_sweep_matches_the_server(vllm_server: VllmServer, tmp_path: Path) -> None:
    before = counters(vllm_server)
    finished = sweep(
        tmp_path, vllm_server, "--rates", "2,6", "--step-duration-s", "6", "--warmup-s", "1",
        "--max-tokens", "16", api_key=vllm_server.api_key,
    )  # fmt: skip
    server = deltas(before, counters(vllm_server), REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS)
    assert_matches_server(finished, server, vllm_server.api_key)
    per_step = [sum(1 for r in finished.rows() if r.step_index == i) for i in (0, 1)]
    # 12 and 36 sends are due; a step's edges move with Locust's one-second shape ticks, and a busy
    # machine may stop the last step late.
    assert 9 <= per_step[0] <= 18 and 27 <= per_step[1] <= 54 and per_step[1] > 2 * per_step[0], per_step


def test_a_shared_system_prompt_moves_the_prefix_cache_counters(vllm_server: VllmServer, tmp_path: Path) -> None:
    before = counters(vllm_server)
    finished = sweep(
        tmp_path, vllm_server, "--steps", "2", "--step-duration-s", "6", "--warmup-s", "0",
        "--prompt-set", "synthetic:input=64,output=16,system=512", api_key=vllm_server.api_key,
    )  # fmt: skip
    server = deltas(before, counters(vllm_server), REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS, PREFIX_QUERIES, PREFIX_HITS)
    assert_matches_server(finished, server, vllm_server.api_key)
    # Every prompt after the first repeats the system message's blocks: most queried tokens hit.
    assert server[PREFIX_HITS] > 0.5 * server[PREFIX_QUERIES] > 0
    hits = [s.value for s in finished.runtime_samples() if s.metric == PREFIX_HITS]
    assert hits and hits[-1] > hits[0]  # the scraper stored the counter rising during the run
