"""Builds and caches llama.cpp's ``llama-server`` and the Python venvs the real-server tests need.

llama.cpp comes from the ``llama-cpp-python`` sdist on PyPI (it vendors a matching llama.cpp), so
the tests reach only the package registry. Products are cached outside the repo, under
``$STAMPEDE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/stampede`` or ``~/.cache/stampede``), so a
machine builds once: about 4.5 minutes on 2 cores the first time, nothing afterwards. A file lock
lets parallel pytest processes share one build, and a marker written last means a half-finished
build (killed, out of disk) is never used: the next caller starts it again.

Run as a script to build and install all of it ahead of the tests: ``python -m tests.realservers.llamacpp``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"
HOW_TO_GET_TOOLS = "apt-get install cmake g++ (the llama.cpp build needs both)"
BUILD_JOBS = os.environ.get("STAMPEDE_BUILD_JOBS", "2")
# Release, shared libraries (llama-cpp-python's server loads the same libllama), and nothing that
# reaches the network at build or run time: no OpenSSL, no web UI (neither npm nor the prebuilt UI
# download), no curl. GGML_NATIVE off builds for the generic AVX2/FMA/F16C level, not this CPU's
# own extensions, so the cache is valid on any x86-64 machine of that level.
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def cache_dir() -> Path:
    """Where builds and venvs live: ``$STAMPEDE_CACHE_DIR`` or ``$XDG_CACHE_HOME/stampede``."""
    if explicit := os.environ.get("STAMPEDE_CACHE_DIR"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stampede"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` (created if missing); other processes wait their turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_logged(command: list[str], log: Path, **kwargs: object) -> None:
    """Runs ``command`` with its output appended to ``log``; on failure raises with the log's tail."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{command[0]} failed ({result.returncode}); full log in {log}:\n{tail}")


def missing_build_tools() -> list[str]:
    """The build tools llama.cpp needs that are not on PATH."""
    return [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]


def sdist(root: Path) -> Path:
    """The ``llama-cpp-python`` sdist, fetched from PyPI once and kept in ``root``."""
    found = sorted(root.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"))
    if found:
        return found[0]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    run_logged([*pip, "-d", str(root), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], root / "download.log")
    return next(root.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"))


def build_root() -> Path:
    return cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def source_dir() -> Path:
    """The unpacked sdist (llama-cpp-python's sources, with llama.cpp under ``vendor/llama.cpp``)."""
    return build_root() / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"


def lib_dir() -> Path:
    """Where the built ``libllama.so`` and ``libggml*.so`` are (llama-cpp-python's ``LLAMA_CPP_LIB_PATH``)."""
    return build_root() / "build" / "bin"


def llama_server() -> Path:
    """The path of a built ``llama-server``, building it first if this machine has none yet."""
    root = build_root()
    binary = lib_dir() / "llama-server"
    done = root / "BUILD_COMPLETE"
    if done.exists():
        return binary
    if missing := missing_build_tools():
        raise RuntimeError(f"building llama-server needs {', '.join(missing)}: {HOW_TO_GET_TOOLS}")
    with locked(root / ".lock"):
        if done.exists():  # another process built it while this one waited
            return binary
        shutil.rmtree(source_dir(), ignore_errors=True)
        shutil.rmtree(root / "build", ignore_errors=True)
        log = root / "build.log"
        log.unlink(missing_ok=True)
        with tarfile.open(sdist(root)) as archive:
            archive.extractall(root, filter="data")
        llama_cpp = source_dir() / "vendor" / "llama.cpp"
        run_logged(["cmake", "-S", str(llama_cpp), "-B", str(root / "build"), *CMAKE_OPTIONS], log)
        build = ["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j", BUILD_JOBS]
        run_logged(build, log)
        done.write_text(f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}\n")
    return binary


def cached_venv(name: str, requirements: list[str], env: dict[str, str] | None = None) -> Path:
    """A venv under the cache dir with ``requirements`` installed, made once per machine; returns its python.

    Kept outside the repo and apart from the test venv: these servers pin their own versions of
    packages Stampede also uses (pydantic, uvicorn, openai).
    """
    root = cache_dir() / name
    python = root / "bin" / "python"
    done = root / "INSTALL_COMPLETE"
    wanted = " ".join(requirements) + "\n"  # a venv made for other requirements is made again
    if done.exists() and done.read_text() == wanted:
        return python
    with locked(cache_dir() / f"{name}.lock"):
        if done.exists() and done.read_text() == wanted:
            return python
        shutil.rmtree(root, ignore_errors=True)
        log = cache_dir() / f"{name}.log"
        log.unlink(missing_ok=True)
        run_logged([sys.executable, "-m", "venv", str(root)], log)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run_logged([*pip, *requirements], log, env={**os.environ, **(env or {})})
        done.write_text(wanted)
    return python


def llama_cpp_python() -> Path:
    """The python of a venv with llama-cpp-python's server, using the libllama built for llama-server.

    ``LLAMA_BUILD=OFF`` skips llama-cpp-python's own build of llama.cpp (it would take minutes again);
    the server then needs ``LLAMA_CPP_LIB_PATH`` set to :func:`lib_dir`, as :func:`llama_cpp_python_env` does.
    """
    llama_server()  # the shared libraries it loads
    archive = sdist(build_root())
    requirement = f"llama_cpp_python[server] @ {archive.as_uri()}"
    cmake_args = "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"
    return cached_venv(f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}", [requirement], {"CMAKE_ARGS": cmake_args})


def llama_cpp_python_env() -> dict[str, str]:
    """Environment for running llama-cpp-python against the libllama of :func:`llama_server`."""
    return {**os.environ, "LLAMA_CPP_LIB_PATH": str(lib_dir())}


def litellm_proxy() -> Path:
    """The ``litellm`` command of a venv with LiteLLM's proxy (about 750 MB)."""
    return cached_venv("litellm-proxy", [LITELLM_REQUIREMENT]).parent / "litellm"


if __name__ == "__main__":
    print(llama_server())
    print(llama_cpp_python())
    print(litellm_proxy())
