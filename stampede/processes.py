"""Child processes and ports on this machine: what the sweep, the demo, benchmarks and tests share."""

from __future__ import annotations

import signal
import socket
import subprocess
from typing import Any

STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop a child process politely (SIGTERM), then firmly (SIGKILL) if it has not gone in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def sigterm_as_interrupt() -> None:
    """Make SIGTERM (``kill``, ``timeout``, systemd) raise KeyboardInterrupt, as Ctrl-C does.

    Python's default for SIGTERM ends the process on the spot, skipping the clean-up Ctrl-C runs
    (stopping child processes, storing what is pending). Main thread only, as for any handler.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
