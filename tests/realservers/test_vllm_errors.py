"""A real vLLM's own refusals, as Stampede stores them: a wrong key, an unknown model, a prompt too long.

Each request is one row, an ``http_error`` with vLLM's status and the start of its body; a key,
right or wrong, lands in neither the database nor any output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stampede.records import Outcome
from tests.realservers.vllm_helpers import locust, sweep
from tests.realservers.vllm_server import VLLM_TEST_TIMEOUT_S, VllmServer

pytest_plugins = ["tests.realservers.vllm_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(VLLM_TEST_TIMEOUT_S)]


def refused(tmp_path: Path, server: VllmServer, *args: str, api_key: str, status: int, says: str) -> None:
    finished, sent = locust(
        tmp_path, server, "-u", "2", "-r", "2", "-t", "3s", "--max-tokens", "8", *args, "OpenAIChatUser",
        api_key=api_key,
    )  # fmt: skip
    rows = finished.rows()
    assert sent >= 2 and len(rows) == sent
    assert {(r.outcome, r.http_status) for r in rows} == {(Outcome.HTTP_ERROR.value, status)}
    assert all(r.error is not None and says in r.error for r in rows), rows[0].error
    assert api_key.encode() not in finished.everything_written()


def test_a_wrong_key_is_stored_as_vllms_own_401(vllm_server: VllmServer, tmp_path: Path) -> None:
    wrong = "wrong-" + vllm_server.api_key[::-1]
    refused(tmp_path, vllm_server, "--model", vllm_server.model, api_key=wrong, status=401, says="Unauthorized")


def test_a_sweep_without_the_key_stops_before_the_load_with_vllms_401(vllm_server: VllmServer, tmp_path: Path) -> None:
    finished = sweep(
        tmp_path, vllm_server, "--steps", "1", "--step-duration-s", "2", "--warmup-s", "0", api_key=None, check=False
    )
    assert "refused access: HTTP 401" in finished.stderr
    assert finished.rows() == []


def test_an_unknown_model_is_stored_as_vllms_own_404(vllm_server: VllmServer, tmp_path: Path) -> None:
    refused(
        tmp_path, vllm_server, "--model", "no-such-model", api_key=vllm_server.api_key, status=404,
        says="The model `no-such-model` does not exist",
    )  # fmt: skip


def test_a_prompt_over_the_context_is_stored_as_vllms_own_400(vllm_server: VllmServer, tmp_path: Path) -> None:
    words = vllm_server.max_model_len + 100  # each word is at least one token
    refused(
        tmp_path, vllm_server, "--model", vllm_server.model, "--prompt-set", f"synthetic:input={words},output=8",
        api_key=vllm_server.api_key, status=400, says=f"maximum context length is {vllm_server.max_model_len} tokens",
    )  # fmt: skip
