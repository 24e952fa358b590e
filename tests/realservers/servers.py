"""Starting and reading real third-party servers: llama.cpp's ``llama-server``, llama-cpp-python's
server and LiteLLM's proxy, each on a free loopback port with its log in a file.

Each ``serve_*`` is a context manager that returns once the server answers and stops it (SIGTERM,
then SIGKILL) on the way out, so no test or benchmark leaves one running.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stampede.processes import free_port, stop
from tests.realservers import llamacpp

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
# The load tests' server: 4 slots, one thread, so the slots are the bottleneck and the machine stays usable.
LLAMA_SERVER_SLOTS = 4
MODEL_NAME = "tiny"
# 8 blocks of width 512 (about 50 MB): decoding outweighs the server's per-request work, so its slots,
# not HTTP, are what limits throughput, as with a real model.
MODEL_OPTIONS = ("--layers", "8", "--embedding", "512")


@dataclass(frozen=True)
class Server:
    """A started server: its base URL and log file."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]


def write_tiny_gguf(path: Path, *options: str) -> Path:
    """The tiny random-weight model of ``scripts/make_tiny_gguf.py``, written to ``path`` with its ``options``."""
    command = [sys.executable, str(REPO / "scripts" / "make_tiny_gguf.py"), str(path), *options]
    subprocess.run(command, check=True, capture_output=True)
    return path


def get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; (0, b"") where nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, f"GET {url}: {status} {body[:200]!r}"
    return json.loads(body)


def prometheus_counters(url: str) -> dict[str, float]:
    """Every sample of a ``/metrics`` page by name (labels ignored: llama.cpp's have none)."""
    status, body = get(f"{url}/metrics")
    assert status == 200, f"GET {url}/metrics: {status}"
    return {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}


@contextlib.contextmanager
def _started(
    command: Sequence[str], log: Path, url: str, ready_path: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while get(url + ready_path, timeout_s=2.0)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{Path(command[0]).name} did not come up (exit {process.poll()}); log {log}:\n{tail}"
                )
            time.sleep(0.2)
        yield Server(url, log, process)
    finally:
        stop(process)


def serve_llama_server(
    model: Path, log: Path, slots: int = LLAMA_SERVER_SLOTS, prefix: Sequence[str] = ()
) -> contextlib.AbstractContextManager[Server]:
    """``llama-server`` with ``slots`` slots, one thread, ``/metrics`` and ``/slots``, ready once ``/health`` is 200.

    ``prefix`` goes before the command (e.g. ``taskset -c 0``).
    """
    port = free_port()
    command = [*prefix, str(llamacpp.llama_server()), "-m", str(model), "--alias", MODEL_NAME,
               "-np", str(slots), "-t", "1", "-c", str(2048 * slots), "--metrics", "--slots",
               "--no-webui", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return _started(command, log, f"http://127.0.0.1:{port}", "/health")


def serve_llama_cpp_python(model: Path, log: Path) -> contextlib.AbstractContextManager[Server]:
    """llama-cpp-python's OpenAI server (``python -m llama_cpp.server``) with its defaults: one request at a
    time, a new one interrupting the running stream. It has no ``/health``: ready once ``/v1/models`` is 200.
    """
    port = free_port()
    command = [str(llamacpp.llama_cpp_python()), "-m", "llama_cpp.server", "--model", str(model),
               "--model_alias", MODEL_NAME, "--n_ctx", "2048", "--n_threads", "1",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return _started(command, log, f"http://127.0.0.1:{port}", "/v1/models", env=llamacpp.llama_cpp_python_env())


def serve_litellm(upstream: Server, log: Path, master_key: str) -> contextlib.AbstractContextManager[Server]:
    """LiteLLM's proxy (from its own cached venv) in front of ``upstream`` as model ``tiny``, offline.

    It refuses to start without a master key, which clients then send as their bearer token.
    ``LITELLM_LOCAL_MODEL_COST_MAP`` keeps it from fetching its price map at start.
    """
    config = log.with_suffix(".yaml")
    config.write_text(
        json.dumps(  # JSON is YAML: no YAML writer needed here
            {
                "model_list": [
                    {
                        "model_name": MODEL_NAME,
                        "litellm_params": {
                            "model": f"openai/{MODEL_NAME}",
                            "api_base": f"{upstream.url}/v1",
                            "api_key": "unused",
                        },  # fmt: skip
                    }
                ],
            }
        )
    )
    port = free_port()
    command = [str(llamacpp.litellm_proxy()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "LITELLM_MASTER_KEY": master_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False"}  # fmt: skip
    return _started(command, log, f"http://127.0.0.1:{port}", "/health/liveliness", env=env)
