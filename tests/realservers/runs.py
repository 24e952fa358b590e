"""Running Stampede against a real server from a test: ``stampede`` and plain Locust as child
processes, each storing into a fresh SQLite file, in a clean environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stampede.db import upgrade
from stampede.locust_launch import locustfiles, sent_requests

RUN_TIMEOUT_S = 240
LOCUST = [sys.executable, "-m", "locust", "-f", locustfiles().split(",")[0]]
HEADLESS = ["--headless", "--json", "--stop-timeout", "30s", "--exit-code-on-error", "0"]


def stampede_env(db_url: str, home: Path) -> dict[str, str]:
    """A clean environment for a Stampede process storing into ``db_url`` (no settings leak in from this one)."""
    return {"STAMPEDE_DATABASE_URL": db_url, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}


def run_stampede(
    args: list[str], db_url: str, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``stampede ARGS`` in ``cwd``, storing into ``db_url``; fails the test if it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "stampede", *args],
        env={**stampede_env(db_url, cwd), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
    )
    assert result.returncode == 0, f"stampede {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def fresh_database(directory: Path) -> str:
    """The URL of a new, migrated SQLite file in ``directory``."""
    db_url = f"sqlite:///{directory}/results.db"
    upgrade(db_url)
    return db_url


def run_locust_headless(host: str, args: list[str], db_url: str, cwd: Path) -> int:
    """Plain headless Locust with the chat locustfile, storing into ``db_url``; returns Locust's request count."""
    result = subprocess.run(
        [*LOCUST, *HEADLESS, "--host", host, *args],
        env=stampede_env(db_url, cwd), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sent_requests(result.stdout)
