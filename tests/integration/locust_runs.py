"""Helpers for tests that run Locust and Stampede's commands as a user does: in a new directory, with
only the environment given, timed, and with the line a failing store leaves read back."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = str(REPO / "loadgen" / "chat.py")
BIN = Path(sys.executable).parent
# The line a sink leaves when it ends with records it could not deliver (loadgen.sinks).
KEPT = re.compile(r"(\d+) records not stored .*: kept in (\S+); deliver them with `stampede replay (\S+)`")


def user_env(folder: Path, **settings: str) -> dict[str, str]:
    """A new user's environment: no STAMPEDE_* but those given, temporary files in ``folder``."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(folder), "TMPDIR": str(folder), **settings}


@dataclass
class Started:
    """A command started in the background, its log, and when it started."""

    process: subprocess.Popen[bytes]
    log: Path
    started: float

    def text(self) -> str:
        """What it wrote to stderr (Locust's log)."""
        return self.log.read_text(errors="replace")

    def stdout(self) -> str:
        return self.log.with_suffix(".out").read_text(errors="replace")

    def wait_for(self, needle: str, timeout_s: float) -> float:
        """Wait until ``needle`` is in the log; returns when it was seen (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            assert self.process.poll() is None or needle in self.text(), (
                f"exited without {needle!r}:\n{self.text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout_s} s:\n{self.text()[-3000:]}"
            time.sleep(0.1)
        return time.monotonic()

    def finish(self, timeout_s: float) -> tuple[int, float]:
        """Wait for the exit; returns the exit status and when it exited (monotonic)."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {timeout_s} s:\n{self.text()[-3000:]}") from None
        return code, time.monotonic()

    def kept(self) -> tuple[int, Path]:
        """The records a failing store left, and the file that holds them, from the one line that says so."""
        (match,) = KEPT.findall(self.text())
        assert match[1] == match[2], "the command must name the file the line names"
        return int(match[0]), Path(match[1])


def start(folder: Path, env: dict[str, str], *command: str, name: str = "command") -> Started:
    log = folder / f"{name}.log"
    with log.open("wb") as err, log.with_suffix(".out").open("wb") as out:
        process = subprocess.Popen(list(command), cwd=folder, env=env, stdout=out, stderr=err)
    return Started(process, log, time.monotonic())


def locust(folder: Path, env: dict[str, str], host: str, *args: str, name: str = "locust") -> Started:
    """``locust -f <repo>/loadgen/chat.py --host HOST ...`` as the README gives it."""
    return start(folder, env, str(BIN / "locust"), "-f", LOCUSTFILE, "--host", host, *args, name=name)


class _Counting(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).posts += 1
        self.send_error(500)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def counting_target() -> Iterator[tuple[str, type[_Counting]]]:
    """A target that counts the chat requests (POSTs) it gets, and answers the probes (GETs)."""
    handler = type("Counting", (_Counting,), {"posts": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def no_stray_files(folder: Path) -> list[str]:
    """Journal segments, spill and kept files left in ``folder``: none after a run whose store worked."""
    return sorted(p.name for p in folder.glob("stampede-*") if not p.name.endswith(".lock"))
