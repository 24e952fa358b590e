"""Simulator benchmark: concurrent streams and tokens/s one simulator process serves, and how late.

The simulator runs pinned to one core (``--server-cpu``) as a vLLM-like profile whose steps cost a
fixed ``1000 / --rate`` ms whatever the batch, so every stream should get ``--rate`` tokens/s, split
over ``--replicas`` engines. Lean load clients (raw asyncio protocols that count SSE events without
parsing them, in ``--client-procs`` processes on the other cores) hold ``--streams`` streams open, each
a series of ``--max-tokens`` requests on one keep-alive connection; the first request of stream ``i``
is shortened to ``1 + i * max_tokens / streams`` tokens so request boundaries do not all coincide, and
``--ramp-s`` opens the streams over that long (first requests then reach the replicas at different
instants, so their steps do too).
Figures come from the simulator's ground truth: tokens/s and mean concurrent streams over the measured
window (after ``--warmup-s``), and lateness (written minus scheduled) of every token in it; plus the
server's CPU use from /proc, as a share of its core and as user and system microseconds per token.
For scale it also times the floor: a bare Python loop of ``socket.send`` to ``--floor-sockets``
loopback TCP sockets, which is what fanning one step's tokens out costs at least.

    python bench/simulator_throughput.py --streams 2000 --rate 50 --duration-s 20 --client-procs 4
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import platform
import re
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import numpy as np


def _request_bytes(port: int, max_tokens: int) -> bytes:
    """A streaming /v1/completions request, as raw HTTP/1.1 bytes."""
    body = json.dumps(
        {"model": "stampede-sim", "prompt": "Benchmark", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    ).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Stream(asyncio.Protocol):
    """One keep-alive connection that sends the next request as soon as the previous stream ends."""

    def __init__(self, first: bytes, request: bytes, stop_at: float, counts: list[int]) -> None:
        self._first = first
        self._request = request
        self._stop_at = stop_at
        self._counts = counts
        self._tail = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._first)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._counts[0] += data.count(b"data: {")
        window = self._tail + data[-8:]
        self._tail = window[-8:]
        if window.endswith(b"0\r\n\r\n") and self.transport is not None:
            self._counts[1] += 1
            if time.monotonic() < self._stop_at:
                self.transport.write(self._request)
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _client(port: int, streams: range, total: int, max_tokens: int, stop_at: float, ramp_s: float) -> list[int]:
    loop = asyncio.get_running_loop()
    counts = [0, 0]
    request = _request_bytes(port, max_tokens)
    protocols: list[_Stream] = []
    for i in streams:
        first = _request_bytes(port, 1 + i * max_tokens // total)
        _, protocol = await loop.create_connection(
            functools.partial(_Stream, first, request, stop_at, counts), "127.0.0.1", port
        )
        protocols.append(protocol)
        if ramp_s:
            await asyncio.sleep(ramp_s / len(streams))
    await asyncio.gather(*(p.closed for p in protocols))
    return counts


def _client_process(
    port: int, streams: range, total: int, max_tokens: int, stop_at: float, ramp_s: float, cpus: set[int]
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    import uvloop

    tokens, requests = uvloop.run(_client(port, streams, total, max_tokens, stop_at, ramp_s))
    print(json.dumps({"tokens": tokens, "requests": requests}), flush=True)


def _drain(port: int, n: int, seconds: float, cpus: set[int]) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key, _ in selector.select(0.05):
                key.fileobj.recv(65_536)  # type: ignore[union-attr]


def _send_floor_us(n: int, server_cpu: int, others: set[int]) -> float:
    """Median microseconds of one 150-byte ``send`` on a loopback TCP socket, over rounds of ``n`` sockets."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    reader = multiprocessing.get_context("spawn").Process(
        target=_drain, args=(listener.getsockname()[1], n, 5.0, others)
    )
    reader.start()
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {server_cpu})
    try:
        conns = [listener.accept()[0] for _ in range(n)]
        for conn in conns:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rounds = []
        for _ in range(10):
            start = time.perf_counter()
            for conn in conns:
                conn.send(b"x" * 150)
            rounds.append((time.perf_counter() - start) / n * 1e6)
            time.sleep(0.05)
    finally:
        os.sched_setaffinity(0, own)
        reader.join()
        listener.close()
    return float(np.median(rounds))


def _cpu_seconds(pid: int) -> np.ndarray:
    """The process's (user, system) CPU seconds so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return np.array([int(fields[11]), int(fields[12])]) / os.sysconf("SC_CLK_TCK")


def _fetch_truth(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/sim/requests", timeout=120) as response:
        return dict(json.loads(response.read()))


def _summarize(truth: dict[str, Any], start_ns: int, end_ns: int) -> dict[str, float]:
    scheduled = []
    written = []
    busy_ns = 0
    for record in truth["requests"]:
        s = np.asarray(record["token_scheduled_ns"], dtype=np.int64)
        w = np.asarray(record["token_written_ns"], dtype=np.int64)
        keep = (s >= start_ns) & (s < end_ns)
        scheduled.append(s[keep])
        written.append(w[keep])
        first = record["arrived_ns"]
        last = record["finished_ns"]
        busy_ns += max(0, min(last, end_ns) - max(first, start_ns))
    sched = np.concatenate(scheduled)
    late_ms = (np.concatenate(written) - sched) / 1e6
    window_s = (end_ns - start_ns) / 1e9
    return {
        "tokens": int(sched.size),
        "tokens_per_s": sched.size / window_s,
        "mean_concurrent_streams": busy_ns / (end_ns - start_ns),
        "late_p50_ms": float(np.percentile(late_ms, 50)),
        "late_p99_ms": float(np.percentile(late_ms, 99)),
        "late_p999_ms": float(np.percentile(late_ms, 99.9)),
        "late_max_ms": float(late_ms.max()),
        "share_within_1ms": float((late_ms <= 1.0).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s of every stream")
    parser.add_argument("--replicas", type=int, default=1, help="engines sharing the streams")
    parser.add_argument("--max-tokens", type=int, default=200, help="tokens per request")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--ramp-s", type=float, default=0.0, help="open the streams over this long, not at once")
    parser.add_argument("--client-procs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--server-cpu", type=int, default=0, help="core the simulator is pinned to")
    parser.add_argument("--floor-sockets", type=int, default=1_000)
    args = parser.parse_args()

    others = set(range(os.cpu_count() or 1)) - {args.server_cpu}
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--profile", "vllm", "--port", "0",
         "--max-running", str(args.streams), "--replicas", str(args.replicas),
         "--step-base-ms", str(1_000 / args.rate), "--step-per-seq-ms", "0",
         "--prefill-tokens-per-s", "1e12", "--kv-budget-tokens", str(10**9), "--max-model-len", str(10**6),
         "--ground-truth-limit", str(10**7)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        os.sched_setaffinity(server.pid, {args.server_cpu})
        assert server.stdout is not None
        match = re.search(r"http://[\d.]+:(\d+)", server.stdout.readline())
        assert match is not None, "simulator did not start"
        port = int(match.group(1))
        url = f"http://127.0.0.1:{port}"
        stop_at = time.monotonic() + args.duration_s
        ctx = multiprocessing.get_context("spawn")
        clients = [
            ctx.Process(
                target=_client_process,
                args=(
                    port,
                    range(i, args.streams, args.client_procs),
                    args.streams,
                    args.max_tokens,
                    stop_at,
                    args.ramp_s,
                    others,
                ),
            )
            for i in range(args.client_procs)
        ]
        for client in clients:
            client.start()
        time.sleep(args.warmup_s)
        start_ns, cpu_start = time.monotonic_ns(), _cpu_seconds(server.pid)
        time.sleep(max(0.0, stop_at - time.monotonic() - 1.0))
        end_ns, cpu_end = time.monotonic_ns(), _cpu_seconds(server.pid)
        for client in clients:
            client.join()
        figures = _summarize(_fetch_truth(url), start_ns, end_ns)
        user_s, system_s = cpu_end - cpu_start
        figures["server_cpu_share"] = (user_s + system_s) / ((end_ns - start_ns) / 1e9)
        figures["server_user_us_per_token"] = user_s / figures["tokens"] * 1e6
        figures["server_system_us_per_token"] = system_s / figures["tokens"] * 1e6
    finally:
        server.terminate()
        server.wait()
    with open("/proc/cpuinfo", encoding="ascii") as cpuinfo:
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu_model = models[0] if models else platform.processor()
    figures["send_floor_us"] = _send_floor_us(args.floor_sockets, args.server_cpu, others)
    print(json.dumps({"args": vars(args), "nproc": os.cpu_count(), "cpu": cpu_model, **figures}, indent=2))


if __name__ == "__main__":
    main()
