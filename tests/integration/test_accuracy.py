"""What one Locust process measures agrees with the truth: the simulator's records, and the wire.

200 concurrent streams of the vLLM-like simulator, one Locust process, embedded mode (SQLite). The
simulator's decode step is set to 40 ms at that batch (``--step-base-ms 30``; its default gives
22 ms), about 4,400 chunks/s. Timing stays exact while the client reads each stream within one
decode step; how many chunks/s one process keeps that way depends on the machine's speed, so that
limit is the benchmark's to find (bench/accuracy.py), not this test's. At the default step a
slow 2-vCPU VM runs the client near one full core, and the check failed there now and then (figures
in docs/benchmarks.md, "The accuracy check on a slower VM").

A chunk the client read together with a later one (the kernel then stamps both with the later
arrival) is listed in the record's ``late_chunks``: its time is an upper bound. The 1 ms comparisons
leave those out, and must still cover most chunks; a late chunk must never be timed early. A stall
of the whole machine longer than a step makes a batch of them late: CI's shared VM once stalled the
client 45 ms, and 1 % of first chunks came 45 ms late, which failed the TTFT check before chunks said so.

Each stored request is matched to the simulator's record by ``server_request_id`` (the X-Request-Id
the simulator returned) and compared:

- tokens: stored ``output_tokens`` == truth ``completion_tokens`` == tokens written == chunks seen;
- ITL: ``|client gap_i - truth gap_i|`` per gap, truth gaps from the simulator's ``token_written_ns``;
- TTFT: client TTFT (first chunk offset from the client's clock start) against the wire's: a
  loopback capture in this process (bench/wire_truth.py, ``AF_PACKET``, kernel stamps) times the
  request's first packet and the packet that completed its first output chunk, and reads the
  response's X-Request-Id. The error is ``|client TTFT - wire TTFT|``, no offset removed: the client
  starts its clock as it writes the request, and the write's way to the wire counts. Each user's
  first request also opens its connection (client TTFT includes the connect, the wire's starts at
  the request), so requests that opened a connection are left out.

The simulator's own TTFT (``token_written_ns[0] - arrived_ns``) is not the truth for TTFT: it starts
when the simulator's event loop parses the request, and at 200 streams on 2 cores requests wait in
its socket behind its own write bursts first (4-12 ms at p99 here), time the client rightly counts.
It is kept as a gross check, deviation from its median offset. The target is 1 ms at p99 for TTFT
and ITL; chunks are timed by the kernel's receive stamp (loadgen/rxstamps.py), the same stamp the
capture sees for the incoming packet.

The capture needs root or CAP_NET_RAW; without it the TTFT test fails, saying so.
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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench.wire_truth import LoopbackCapture, WireRequest, reconstruct
from stampede.db import upgrade
from stampede.schema import Request

REPO = Path(__file__).resolve().parents[2]
USERS = 200
MAX_TOKENS = 32
DURATION_S = 10
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
    ttft_late: np.ndarray  # per ttft_error_ms: the first chunk is listed late (timed by a later one)
    itl_error_ms: np.ndarray
    itl_late: np.ndarray  # per itl_error_ms: the gap ends at or starts from a chunk listed late
    itl_truth_ms: np.ndarray
    wire_ttft_error_ms: np.ndarray  # client TTFT - wire TTFT, signed, on reused connections
    wire_late: np.ndarray  # per wire_ttft_error_ms: the first chunk is listed late
    wire_send_lag_ms: np.ndarray  # the record's started_at -> request's first packet: the request built and written
    wire_openers: int  # stored requests that opened their connection
    wire_note: str  # why there is no wire truth, or what the capture lost and cost


def _simulator_port(host: str) -> int:
    return int(host.rsplit(":", 1)[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def simulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("sim") / "sim.log"
    command = [sys.executable, "-m", "simulator", "--profile", "vllm", "--port", str(port),
               "--ground-truth-limit", "100000", "--step-base-ms", "30"]  # fmt: skip
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
    port = _simulator_port(simulator_host)
    try:
        capture: LoopbackCapture | None = LoopbackCapture(port)
        wire_note = ""
    except PermissionError as exc:
        capture, wire_note = None, str(exc)
    if capture is not None:
        capture.start()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
    finally:
        drops = capture.finish() if capture is not None else 0
    assert result.returncode == 0, result.stderr[-3000:]
    sent = sum(entry["num_requests"] for entry in json.loads(result.stdout))
    with urllib.request.urlopen(f"{simulator_host}/sim/requests", timeout=30) as answer:
        truth = {str(r["id"]): r for r in json.load(answer)["requests"]}
    with Session(create_engine(db_url)) as session:
        rows = session.execute(
            select(Request.server_request_id, Request.chunk_offsets_ns, Request.output_tokens, Request.started_at,
                   Request.late_chunks)
            .where(Request.outcome == "ok")
            .order_by(Request.started_at)
        ).all()  # fmt: skip
    wire: dict[str, WireRequest] = {}
    if capture is not None:
        requests, broken = reconstruct(capture.packets, port)
        wire = {r.request_id: r for r in requests if r.request_id is not None}
        wire_note = (
            f"capture: {len(capture.packets)} segments, {drops} dropped by the kernel, {broken} connections "
            f"with a gap, {capture.cpu_s:.2f} CPU s"
        )
    return compare(sent, rows, truth, wire, wire_note)


def _realtime_ns(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive UTC
    return round(moment.timestamp() * 1e6) * 1000


def compare(sent: int, rows: list, truth: dict[str, dict], wire: dict[str, WireRequest], wire_note: str) -> Comparison:
    matched = tokens_agree = openers = 0
    ttft_diff_ns, itl_err_ns, itl_truth_ns, wire_err_ns, send_lag_ns = [], [], [], [], []
    ttft_late, itl_late, wire_late = [], [], []
    for index, (request_id, offsets, output_tokens, started_at, late) in enumerate(rows):
        record = truth.get(str(request_id))
        if record is None or not offsets:
            continue
        matched += 1
        written = np.asarray(record["token_written_ns"], dtype=np.int64)
        tokens_agree += int(output_tokens == record["completion_tokens"] == written.size == len(offsets))
        if len(offsets) == written.size:
            itl_err_ns.append(np.abs(np.diff(np.asarray(offsets, dtype=np.int64)) - np.diff(written)))
            itl_truth_ns.append(np.diff(written))
            late_chunk = np.zeros(len(offsets), dtype=bool)
            late_chunk[late] = True
            itl_late.append(late_chunk[:-1] | late_chunk[1:])
        if index >= USERS:  # every user's first request also opened its connection
            ttft_diff_ns.append(offsets[0] - (written[0] - record["arrived_ns"]))
            ttft_late.append(0 in late)
        on_wire = wire.get(str(request_id))
        if on_wire is not None and on_wire.index == 0:
            openers += 1
        elif on_wire is not None and on_wire.ttft_ns is not None:
            wire_err_ns.append(offsets[0] - on_wire.ttft_ns)
            wire_late.append(0 in late)
            send_lag_ns.append(on_wire.sent_ns - _realtime_ns(started_at))
    diff = np.asarray(ttft_diff_ns, dtype=np.float64)
    offset = float(np.median(diff[~np.asarray(ttft_late, dtype=bool)]))
    return Comparison(
        sent=sent,
        stored=len(rows),
        matched=matched,
        tokens_agree=tokens_agree,
        ttft_offset_ms=offset / 1e6,
        ttft_error_ms=np.abs(diff - offset) / 1e6,
        ttft_late=np.asarray(ttft_late, dtype=bool),
        itl_error_ms=np.concatenate(itl_err_ns) / 1e6,
        itl_late=np.concatenate(itl_late),
        itl_truth_ms=np.concatenate(itl_truth_ns) / 1e6,
        wire_ttft_error_ms=np.asarray(wire_err_ns, dtype=np.float64) / 1e6,
        wire_late=np.asarray(wire_late, dtype=bool),
        wire_send_lag_ms=np.asarray(send_lag_ns, dtype=np.float64) / 1e6,
        wire_openers=openers,
        wire_note=wire_note,
    )


def _describe(c: Comparison) -> str:
    def pct(a: np.ndarray) -> str:
        if not a.size:
            return "none"
        return f"p50 {np.percentile(a, 50):.3f} p99 {np.percentile(a, 99):.3f} max {a.max():.3f} ms"

    wire = "none"
    if c.wire_ttft_error_ms.size:
        e, lag = c.wire_ttft_error_ms, c.wire_send_lag_ms
        wire = (
            f"{e.size} requests, {c.wire_late.sum()} with the first chunk late; |error| {pct(np.abs(e[~c.wire_late]))}"
            f" (late: {pct(e[c.wire_late])}), signed min {e.min():.3f} ms; from started_at, the request built and"
            f" on the wire {pct(lag)}"
        )
    return (
        f"TTFT vs wire: {wire} ({c.wire_note}); TTFT vs simulator: offset {c.ttft_offset_ms:.2f} ms, "
        f"error {pct(c.ttft_error_ms[~c.ttft_late])}; ITL: {c.itl_late.sum()} of {c.itl_late.size} gaps touch a"
        f" late chunk; error {pct(c.itl_error_ms[~c.itl_late])} (late: {pct(c.itl_error_ms[c.itl_late])})"
    )


def test_every_request_is_matched_and_its_token_count_agrees_exactly(comparison: Comparison) -> None:
    c = comparison
    assert c.sent > 5 * USERS
    assert c.stored == c.sent
    assert c.matched == c.stored
    assert c.tokens_agree == c.matched  # usage == completion_tokens == tokens written == chunks seen
    assert c.itl_error_ms.size == c.matched * (MAX_TOKENS - 1)


def test_most_chunks_were_read_before_the_next_one_arrived(comparison: Comparison) -> None:
    """The exact comparisons below leave out chunks listed late; they must still cover most of them.

    A chunk is late when the client read it together with a later one (a stall longer than a decode
    step; docs/metrics.md). Here a handful of chunks in thousands are, or one step's worth after a
    stall of the whole machine. Stopping the client 100 ms in every 470 ms made 4 % of first chunks
    and 11 % of gaps late (a gap is late when either of its chunks is).
    """
    c = comparison
    assert c.ttft_late.mean() < 0.2 and c.itl_late.mean() < 0.2, _describe(c)


def test_measured_gaps_and_ttft_track_the_truth_grossly(comparison: Comparison) -> None:
    """A guard against gross errors (batched reads, wrong clock or units), not the 1 ms target.

    A client that stamped chunks late in batches would show gaps near zero and step-sized; one
    with a wrong unit or clock, errors the size of the gaps themselves. Over all chunks, late or not.
    """
    c = comparison
    truth_gap_ms = float(np.median(c.itl_truth_ms))
    assert np.percentile(c.itl_error_ms, 50) < 0.25 * truth_gap_ms, _describe(c)
    assert 0 <= c.ttft_offset_ms < 2 * truth_gap_ms, _describe(c)  # a client cannot see a token before it is sent
    assert np.percentile(c.ttft_error_ms, 50) < truth_gap_ms, _describe(c)


def test_itl_agrees_with_the_truth_within_1_ms_at_p99(comparison: Comparison) -> None:
    c = comparison
    assert np.percentile(c.itl_error_ms[~c.itl_late], 99) <= TOLERANCE_MS, _describe(c)


def test_ttft_agrees_with_the_wire_within_1_ms_at_p99(comparison: Comparison) -> None:
    c = comparison
    if not c.wire_ttft_error_ms.size:
        pytest.fail(f"no wire truth for TTFT: {c.wire_note}")
    print(_describe(c))
    # Every stored request is on the wire: those that opened a connection, and the ones compared.
    assert c.wire_openers + c.wire_ttft_error_ms.size == c.matched, _describe(c)
    # The client cannot see the token before the wire; a late first chunk is timed after it.
    assert c.wire_ttft_error_ms.min() >= 0, _describe(c)
    assert np.percentile(np.abs(c.wire_ttft_error_ms[~c.wire_late]), 99) <= TOLERANCE_MS, _describe(c)
