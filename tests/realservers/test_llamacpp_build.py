"""The llama.cpp build the real-server tests share: on a machine without the tools, a message that
says how to get them, before anything is downloaded or half-built."""

from pathlib import Path

import pytest

from tests.realservers import llamacpp


def test_a_machine_without_build_tools_is_told_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMPEDE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no cmake, no c++
    with pytest.raises(RuntimeError, match=r"apt-get install cmake g\+\+"):
        llamacpp.llama_server()
    assert not (tmp_path / "cache").exists()  # nothing fetched, nothing to mistake for a build


def test_a_finished_build_is_used_without_the_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMPEDE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    root = tmp_path / f"llama.cpp-{llamacpp.LLAMA_CPP_PYTHON_VERSION}"
    root.mkdir()
    (root / "BUILD_COMPLETE").write_text("")
    assert llamacpp.llama_server() == root / "build" / "bin" / "llama-server"
