"""What one Locust process measures agrees with what the simulator really did (its ground truth).

200 concurrent streams of the vLLM-like simulator, one Locust process, embedded mode (SQLite). Each
stored request is matched to the simulator's record by ``server_request_id`` (the X-Request-Id the
simulator returned) and compared:

- tokens: stored ``output_tokens`` == truth ``completion_tokens`` == tokens written == chunks seen;
- ITL: ``|client gap_i - truth gap_i|`` per gap, truth gaps from ``token_written_ns``;
- TTFT: client TTFT against truth ``token_written_ns[0] - arrived_ns``. They differ by a near
  constant offset the server cannot see (request write and loopback before its clock starts; a
  few ms here): the tolerance applies to the deviation from the median offset. Each user's first
  request also opens its connection, which the truth cannot see either, so TTFT is compared on
  the requests sent after every user's first (the first ``USERS`` by send time).

The target is 1 ms at p99 for both. ITL meets it: each chunk is timed by the kernel's receive
stamp (loadgen/rxstamps.py), so the gevent loop's lateness no longer counts. TTFT does not, for a
reason on the truth's side (see the xfail reason and docs/benchmarks.md, "Measurement accuracy");
a separate test pins the gross agreement that does hold.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from stampede.db import upgrade
from stampede.schema import Request

REPO = Path(__file__).resolve().parents[2]
USERS = 200
MAX_TOKENS = 32
DURATION_S = 8
TOLERANCE_MS = 1.0
RUN_TIMEOUT_S = 120


@dataclass
class Comparison:
    sent: int
    stored: int
    matched: int
    tokens_agree: int
    ttft_offset_ms: float
    ttft_error_ms: np.ndarray
    itl_error_ms: np.ndarray
    itl_truth_ms: np.ndarray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def simulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("sim") / "sim.log"
    command = [sys.executable, "-m", "simulator", "--profile", "vllm", "--port", str(port),
               "--ground-truth-limit", "100000"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log_path.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def comparison(simulator_host: str, tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    tmp_path = tmp_path_factory.mktemp("accuracy")
    db_url = f"sqlite:///{tmp_path}/results.db"
    upgrade(db_url)
    command = [sys.executable, "-m", "locust", "-f", str(REPO / "loadgen" / "chat.py"), "--headless", "--json",
               "--host", simulator_host, "-u", str(USERS), "-r", str(USERS), "-t", f"{DURATION_S}s",
               "--stop-timeout", "60s", "--exit-code-on-error", "0", "--max-tokens", str(MAX_TOKENS),
               "--ignore-eos", "OpenAIChatUser"]  # fmt: skip
    env = {"STAMPEDE_DATABASE_URL": db_url, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sent = sum(entry["num_requests"] for entry in json.loads(result.stdout))
    with urllib.request.urlopen(f"{simulator_host}/sim/requests", timeout=30) as answer:
        truth = {str(r["id"]): r for r in json.load(answer)["requests"]}
    with Session(create_engine(db_url)) as session:
        rows = session.execute(
            select(Request.server_request_id, Request.chunk_offsets_ns, Request.output_tokens)
            .where(Request.outcome == "ok")
            .order_by(Request.started_at)
        ).all()  # fmt: skip
    return compare(sent, rows, truth)


def compare(sent: int, rows: list, truth: dict[str, dict]) -> Comparison:
    matched = tokens_agree = 0
    ttft_diff_ns, itl_err_ns, itl_truth_ns = [], [], []
    for index, (request_id, offsets, output_tokens) in enumerate(rows):
        record = truth.get(str(request_id))
        if record is None or not offsets:
            continue
        matched += 1
        written = np.asarray(record["token_written_ns"], dtype=np.int64)
        tokens_agree += int(output_tokens == record["completion_tokens"] == written.size == len(offsets))
        if len(offsets) == written.size:
            itl_err_ns.append(np.abs(np.diff(np.asarray(offsets, dtype=np.int64)) - np.diff(written)))
            itl_truth_ns.append(np.diff(written))
        if index >= USERS:  # every user's first request also opened its connection
            ttft_diff_ns.append(offsets[0] - (written[0] - record["arrived_ns"]))
    diff = np.asarray(ttft_diff_ns, dtype=np.float64)
    offset = float(np.median(diff))
    return Comparison(
        sent=sent,
        stored=len(rows),
        matched=matched,
        tokens_agree=tokens_agree,
        ttft_offset_ms=offset / 1e6,
        ttft_error_ms=np.abs(diff - offset) / 1e6,
        itl_error_ms=np.concatenate(itl_err_ns) / 1e6,
        itl_truth_ms=np.concatenate(itl_truth_ns) / 1e6,
    )


def _describe(c: Comparison) -> str:
    def pct(a: np.ndarray) -> str:
        return f"p50 {np.percentile(a, 50):.2f} p99 {np.percentile(a, 99):.2f} max {a.max():.2f} ms"

    return f"TTFT offset {c.ttft_offset_ms:.2f} ms, TTFT error {pct(c.ttft_error_ms)}; ITL error {pct(c.itl_error_ms)}"


def test_every_request_is_matched_and_its_token_count_agrees_exactly(comparison: Comparison) -> None:
    c = comparison
    assert c.sent > 5 * USERS
    assert c.stored == c.sent
    assert c.matched == c.stored
    assert c.tokens_agree == c.matched  # usage == completion_tokens == tokens written == chunks seen
    assert c.itl_error_ms.size == c.matched * (MAX_TOKENS - 1)


def test_measured_gaps_and_ttft_track_the_truth_grossly(comparison: Comparison) -> None:
    """A guard against gross errors (batched reads, wrong clock or units), not the 1 ms target.

    A client that stamped chunks late in batches would show gaps near zero and step-sized; one
    with a wrong unit or clock, errors the size of the gaps themselves.
    """
    c = comparison
    truth_gap_ms = float(np.median(c.itl_truth_ms))
    assert np.percentile(c.itl_error_ms, 50) < 0.25 * truth_gap_ms, _describe(c)
    assert 0 <= c.ttft_offset_ms < 2 * truth_gap_ms, _describe(c)  # a client cannot see a token before it is sent
    assert np.percentile(c.ttft_error_ms, 50) < truth_gap_ms, _describe(c)


def test_itl_agrees_with_the_truth_within_1_ms_at_p99(comparison: Comparison) -> None:
    c = comparison
    assert np.percentile(c.itl_error_ms, 99) <= TOLERANCE_MS, _describe(c)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "the truth starts TTFT when the simulator's loop parses the request: on 2 shared cores the closed "
        "loop's waves of 200 requests wait in its socket meanwhile (p99 4-6 ms), which the client rightly "
        "counts and the truth cannot see; the client's own part is within 1 ms (request written 0.2-0.3 ms "
        "p99 after its clock starts, first chunk stamped 5 us p99 after the truth's write); TTFT deviation "
        "p99 measured 3.7-5.5 ms (docs/benchmarks.md, Measurement accuracy)"
    ),
)
def test_ttft_agrees_with_the_truth_within_1_ms_at_p99(comparison: Comparison) -> None:
    c = comparison
    assert np.percentile(c.ttft_error_ms, 99) <= TOLERANCE_MS, _describe(c)
