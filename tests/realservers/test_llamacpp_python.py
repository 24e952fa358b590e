"""llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``) under four users.

It serves one request at a time, has no ``/health`` or ``/metrics``, sends no usage when streaming,
and by default stops the running stream (``[DONE]`` straight after a token, no ``finish_reason``)
when a newer request arrives. Stampede must survive that and lose nothing: every request Locust
counted is one row, and the interrupted ones are ``aborted``, not ok and not cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from stampede.schema import Request
from tests.realservers import llamacpp
from tests.realservers.runs import fresh_database, run_locust_headless
from tests.realservers.servers import MODEL_NAME, Server, serve_llama_cpp_python

pytest_plugins = ["tests.realservers.llamacpp_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def llama_cpp_python_server(
    llama_server_binary: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    try:
        llamacpp.llama_cpp_python()
    except RuntimeError as exc:
        pytest.fail(f"installing llama-cpp-python {llamacpp.LLAMA_CPP_PYTHON_VERSION} failed: {exc}")
    with serve_llama_cpp_python(tiny_gguf, tmp_path_factory.mktemp("llama-cpp-python") / "server.log") as server:
        yield server


def test_interrupted_streams_are_stored_as_aborted_and_nothing_is_lost(
    llama_cpp_python_server: Server, tmp_path: Path
) -> None:
    db_url = fresh_database(tmp_path)
    load = ["-u", "4", "-r", "4", "-t", "8s", "--model", MODEL_NAME, "--max-tokens", "24", "OpenAIChatUser"]
    sent = run_locust_headless(llama_cpp_python_server.url, load, db_url, tmp_path)
    with Session(create_engine(db_url)) as session:
        outcomes = dict(session.execute(select(Request.outcome, func.count()).group_by(Request.outcome)).all())
        aborted_statuses = set(session.scalars(select(Request.http_status).where(Request.outcome == "aborted")))
    assert sent >= 4
    assert sum(outcomes.values()) == sent, (outcomes, sent)
    assert set(outcomes) <= {"ok", "aborted"}, outcomes
    assert outcomes.get("aborted", 0) > 0, outcomes  # four users keep a newer request waiting
    assert aborted_statuses == {200}  # answered, then given up: not a refusal
