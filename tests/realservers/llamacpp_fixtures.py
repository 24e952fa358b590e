"""Fixtures for the tests against llama.cpp, used as a plugin
(``pytest_plugins = ["tests.realservers.llamacpp_fixtures"]``): the tiny model, a running
``llama-server`` per test module.

The first use on a machine builds llama.cpp (see :mod:`tests.realservers.llamacpp`); without cmake
or a C++ compiler the tests fail saying how to get them, never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realservers import llamacpp
from tests.realservers.servers import MODEL_OPTIONS, Server, serve_llama_server, write_tiny_gguf


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    try:
        return llamacpp.llama_server()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf", *MODEL_OPTIONS)


@pytest.fixture(scope="module")
def llama_server(
    llama_server_binary: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    with serve_llama_server(tiny_gguf, log) as server:
        yield server
