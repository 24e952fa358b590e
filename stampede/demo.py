"""The demo: start the built-in simulator with an Ollama-like and a vLLM-like profile, on free ports."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from stampede.locust_launch import SweepError
from stampede.processes import free_port, stop
from stampede.records import Api
from stampede.sweepfile import TargetSpec

READY_TIMEOUT_S = 30.0
# (target, simulator profile, API); the profile also names the runtime statistics sampled (/api/ps, /metrics).
DEMO_PROFILES = (("ollama-like", "ollama", Api.OLLAMA_CHAT), ("vllm-like", "vllm", Api.OPENAI_CHAT))
DEMO_MODEL = "stampede-sim"


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path, profile: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if "listening on" in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise SweepError(f"the {profile} simulator exited before it was ready; see {log_path}")
        time.sleep(0.1)
    raise SweepError(f"the {profile} simulator was not ready within {READY_TIMEOUT_S:.0f} s; see {log_path}")


def start_simulator(profile: str, port: int, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m simulator`` and return once it accepts connections."""
    command = [sys.executable, "-m", "simulator", "--profile", profile, "--port", str(port), *args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(process, log_path, profile)
    except SweepError:
        stop(process)
        raise
    return process


@contextlib.contextmanager
def simulators(log_dir: Path) -> Iterator[list[TargetSpec]]:
    """Run one simulator per demo profile, logging into ``log_dir``; yields the targets."""
    processes: list[subprocess.Popen[bytes]] = []
    targets = []
    try:
        for name, profile, api in DEMO_PROFILES:
            port = free_port()
            processes.append(start_simulator(profile, port, log_dir / f"simulator-{profile}.log"))
            targets.append(
                TargetSpec(name=name, url=f"http://127.0.0.1:{port}", api=api, model=DEMO_MODEL, runtime=profile)
            )
        yield targets
    finally:
        for process in processes:
            stop(process)
