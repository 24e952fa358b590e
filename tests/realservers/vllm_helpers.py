"""Reading a real vLLM's counters and running Stampede's own commands against it, as a user would."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from stampede.db import upgrade
from stampede.locust_launch import locustfiles, sent_requests
from stampede.schema import Request, RuntimeSample
from tests.realservers.vllm_server import VllmServer

RUN_TIMEOUT_S = 240
# The server's counters a run is checked against: stored rows and tokens must equal their deltas.
REQUESTS = "vllm:request_success_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
OUTPUT_TOKENS = "vllm:generation_tokens_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def counters(server: VllmServer) -> dict[str, float]:
    """Every sample of the server's ``/metrics``, summed over label sets, by sample name."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text(server.url)):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def deltas(before: dict[str, float], after: dict[str, float], *names: str) -> dict[str, float]:
    return {name: after[name] - before[name] for name in names}


@dataclass(frozen=True)
class Finished:
    """What a Stampede command left: its output, its database and the logs it wrote."""

    stdout: str
    stderr: str
    db_url: str
    db_path: Path
    workdir: Path

    def rows(self) -> list[Request]:
        with Session(create_engine(self.db_url)) as session:
            return list(session.scalars(select(Request)))

    def runtime_samples(self) -> list[RuntimeSample]:
        with Session(create_engine(self.db_url)) as session:
            return list(session.scalars(select(RuntimeSample).order_by(RuntimeSample.sampled_at)))

    def everything_written(self) -> bytes:
        """The database file, the output and every log under the working directory, for looking for secrets."""
        files = b"".join(p.read_bytes() for p in sorted(self.workdir.rglob("*")) if p.is_file())
        return files + self.stdout.encode() + self.stderr.encode()


def run(workdir: Path, command: list[str], api_key: str | None, check: bool = True) -> Finished:
    """Run a command in ``workdir`` into a fresh SQLite file there, with ``STAMPEDE_API_KEY`` if given."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "results.db"
    db_url = f"sqlite:///{db_path}"
    upgrade(db_url)
    env = {
        "STAMPEDE_DATABASE_URL": db_url,
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(workdir),
    }
    if api_key is not None:
        env["STAMPEDE_API_KEY"] = api_key
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=workdir)
    if check:
        assert result.returncode == 0, f"{command[:4]} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return Finished(result.stdout, result.stderr, db_url, db_path, workdir)


def locust(workdir: Path, server: VllmServer, *args: str, api_key: str | None) -> tuple[Finished, int]:
    """``locust -f loadgen/chat.py`` headless against the server; returns what it left and Locust's request count."""
    command = [sys.executable, "-m", "locust", "-f", locustfiles().split(",")[0], "--headless", "--json",
               "--host", server.url, "--stop-timeout", "60s", "--exit-code-on-error", "0", *args]  # fmt: skip
    finished = run(workdir, command, api_key)
    return finished, sent_requests(finished.stdout)


def sweep(workdir: Path, server: VllmServer, *args: str, api_key: str | None, check: bool = True) -> Finished:
    """``stampede sweep --runtime vllm`` against the server."""
    command = [sys.executable, "-m", "stampede", "sweep", "--host", server.url, "--model", server.model,
               "--runtime", "vllm", *args]  # fmt: skip
    return run(workdir, command, api_key, check)
