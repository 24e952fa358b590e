"""Measurement accuracy: what one Locust process measures, against the simulator's ground truth.

For each concurrency in ``--streams``, a vLLM-like simulator and one headless Locust process
(``OpenAIChatUser``, closed loop, ``--max-tokens`` with ``ignore_eos``) run for ``--duration-s``
into a fresh SQLite file (embedded mode). Each stored request is matched to the simulator's record
by ``server_request_id`` (the ``X-Request-Id`` it returned) and compared:

- tokens: stored ``output_tokens`` == truth ``completion_tokens`` == tokens written == chunks seen;
- ITL: ``|client gap_i - truth gap_i|`` for every gap, truth gaps from ``token_written_ns``, and the
  share of gaps off by more than 1 ms;
- TTFT against the wire (``ttft_error_vs_wire_ms``): ``|client TTFT - wire TTFT|``, no offset
  removed, where a loopback capture in this process (bench/wire_truth.py; root or CAP_NET_RAW)
  times each request's first packet and the packet that completed its first output chunk. Requests
  that opened their connection are left out (the client's TTFT includes the connect). This is the
  TTFT truth: the simulator's own starts when its loop parses the request, late under load.
- TTFT against the simulator: client TTFT minus truth ``token_written_ns[0] - arrived_ns``. The
  two differ by a near constant (the client's connect and request write, and loopback, before the
  server's clock starts): the median of that difference is reported as the offset, and the error
  is the deviation from it.

Also the chunks per second the process received, the share it listed late (read together with a
later chunk, so timed by that one's arrival: ``late_chunks``), its loop lag (the health samples it
stored), and its CPU cost: user+sys CPU seconds of the Locust process tree (``RUSAGE_CHILDREN``
around it) per 1,000 output tokens, and the machine's noise floor (how late an idle thread wakes
from a 1 ms sleep meanwhile). ``--limit-streams`` raises the load until the p99 ITL error passes 1 ms.
``--peer aiperf`` runs AIPerf (from ``--peer-venv``, never this venv) on the same load; its
requests cannot be matched one by one (see :func:`bench_aiperf`), so its percentiles stand beside
the truth's, as Stampede's do in ``side_by_side``.

    python bench/accuracy.py --streams 50,200,1000 --limit-streams 1,5,10,20 --duration-s 20
    python bench/accuracy.py --streams 200 --prompt-set synthetic:input=92,output=64 --peer aiperf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from wire_truth import LoopbackCapture, WireRequest, reconstruct

from stampede.db import upgrade
from stampede.processes import free_port, stop
from stampede.schema import LoadgenSample, Request

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO / "loadgen" / "chat.py"


# Extra simulator flags (--step-base-ms), set from the command line.
SIMULATOR_ARGS: list[str] = []


def start_simulator(port: int, log_path: Path, streams: int) -> subprocess.Popen[bytes]:
    """A vLLM-like simulator that decodes all ``streams`` at once and keeps every record; returns once it listens."""
    command = [sys.executable, "-m", "simulator", "--profile", "vllm", "--port", str(port),
               "--max-running", str(max(256, streams)), "--ground-truth-limit", "1000000", *SIMULATOR_ARGS]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 30
    while "listening on" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise SystemExit(f"the simulator did not start; see {log_path}")
        time.sleep(0.1)
    return process


def process_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NoiseProbe(threading.Thread):
    """How late the OS wakes an idle thread from a 1 ms sleep: the machine's own timing noise floor."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.late_ns: list[int] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            before = time.perf_counter_ns()
            time.sleep(0.001)
            self.late_ns.append(time.perf_counter_ns() - before - 1_000_000)

    def finish(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return percentiles(np.asarray(self.late_ns, dtype=np.float64) / 1e6)


def truth_records(host: str) -> dict[str, dict[str, Any]]:
    """The simulator's finished requests, by the id it sent as X-Request-Id."""
    with urllib.request.urlopen(f"{host}/sim/requests", timeout=60) as answer:
        body = json.load(answer)
    return {str(r["id"]): r for r in body["requests"]}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PROMPT_SET = ["--prompt-set", "seeds"]


def run_locust(host: str, db_url: str, users: int, max_tokens: int, duration_s: float, workdir: Path) -> float:
    """One headless Locust process; returns the CPU seconds (user+sys) of its process tree."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
               "-u", str(users), "-r", str(users), "-t", f"{duration_s:g}s", "--stop-timeout", "120s",
               "--exit-code-on-error", "0", "--max-tokens", str(max_tokens), "--ignore-eos",
               *PROMPT_SET, "OpenAIChatUser"]  # fmt: skip
    env = {**os.environ, "STAMPEDE_DATABASE_URL": db_url}
    before = children_cpu_s()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration_s + 300, cwd=workdir)
    if result.returncode != 0:
        raise SystemExit(f"locust failed:\n{result.stderr[-3000:]}")
    return children_cpu_s() - before


def percentiles(errors_ms: np.ndarray) -> dict[str, float]:
    if errors_ms.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "p50": float(np.percentile(errors_ms, 50)),
        "p99": float(np.percentile(errors_ms, 99)),
        "max": float(errors_ms.max()),
    }


def compare(measured: list[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Errors of measured requests against ground truth.

    ``measured`` items: ``id`` (server request id), ``ttft_ns``, ``gaps_ns`` (client inter-chunk
    gaps, or None when unknown) and ``tokens`` (the tokens the client reported).
    """
    ttft_diff, itl_err, tokens_ok, unmatched = [], [], 0, 0
    for m in measured:
        t = truth.get(str(m["id"]))
        if t is None or not t["token_written_ns"]:
            unmatched += 1
            continue
        written = np.asarray(t["token_written_ns"], dtype=np.int64)
        chunks_ok = m["gaps_ns"] is None or len(m["gaps_ns"]) + 1 == written.size
        tokens_ok += int(m["tokens"] == t["completion_tokens"] == written.size and chunks_ok)
        ttft_diff.append(m["ttft_ns"] - (written[0] - t["arrived_ns"]))
        if m["gaps_ns"] is not None and len(m["gaps_ns"]) == written.size - 1:
            itl_err.append(np.abs(np.asarray(m["gaps_ns"], dtype=np.int64) - np.diff(written)))
    diff = np.asarray(ttft_diff, dtype=np.float64)
    offset_ns = float(np.median(diff)) if diff.size else float("nan")
    itl = np.concatenate(itl_err) if itl_err else np.empty(0)
    return {
        "requests": len(measured),
        "unmatched": unmatched,
        "tokens_agree": tokens_ok,
        "ttft_offset_ms": offset_ns / 1e6,
        "ttft_error_ms": percentiles(np.abs(diff - offset_ns) / 1e6),
        "itl_gaps": int(itl.size),
        "itl_error_ms": percentiles(itl / 1e6),
        "itl_share_over_1_ms": float((itl > 1_000_000).mean()) if itl.size else float("nan"),
    }


def stampede_requests(db_url: str) -> tuple[list[dict[str, Any]], int, int, int, float, list[float]]:
    """Stored ok requests as ``compare`` items, output tokens, chunks, chunks read late, chunk window (s),
    loop lags (ms)."""
    with Session(create_engine(db_url)) as session:
        rows = session.execute(
            select(Request.server_request_id, Request.chunk_offsets_ns, Request.output_tokens, Request.started_at,
                   Request.late_chunks)
            .where(Request.outcome == "ok")
            .order_by(Request.started_at)
        ).all()  # fmt: skip
        lags = list(session.scalars(select(LoadgenSample.loop_lag_ms)))
    measured = [
        {"id": str(rid), "ttft_ns": offs[0], "gaps_ns": np.diff(offs).tolist(), "tokens": tokens}
        for rid, offs, tokens, _, _ in rows
        if offs
    ]
    starts = [r.started_at.timestamp() for r in rows]
    ends = [r.started_at.timestamp() + r.chunk_offsets_ns[-1] / 1e9 for r in rows if r.chunk_offsets_ns]
    window_s = max(ends) - min(starts) if rows else float("nan")
    tokens = sum(r.output_tokens or 0 for r in rows)
    chunks = sum(len(r.chunk_offsets_ns) for r in rows)
    late = sum(len(r.late_chunks) for r in rows)
    return measured, tokens, chunks, late, window_s, lags


def wire_errors(measured: list[dict[str, Any]], wire: dict[str, WireRequest]) -> dict[str, Any]:
    """``|client TTFT - wire TTFT|`` percentiles (ms) over requests sent on a connection already open."""
    errors, openers = [], 0
    for m in measured:
        on_wire = wire.get(m["id"])
        if on_wire is not None and on_wire.index == 0:
            openers += 1
        elif on_wire is not None and on_wire.ttft_ns is not None:
            errors.append(abs(m["ttft_ns"] - on_wire.ttft_ns))
    return {
        "ttft_error_vs_wire_ms": percentiles(np.asarray(errors, dtype=np.float64) / 1e6),
        "wire_requests": len(errors),
        "wire_connection_openers": openers,
    }


def start_capture(port: int) -> LoopbackCapture | None:
    try:
        capture = LoopbackCapture(port)
    except PermissionError as exc:
        print(f"no TTFT against the wire: {exc}", file=sys.stderr)
        return None
    capture.start()
    return capture


def bench_stampede(users: int, max_tokens: int, duration_s: float, workdir: Path) -> dict[str, Any]:
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    sim = start_simulator(port, workdir / "sim.log", users)
    capture = None
    try:
        db_url = f"sqlite:///{workdir}/results.db"
        upgrade(db_url)
        sim_cpu_before, probe = process_cpu_s(sim.pid), NoiseProbe()
        capture = start_capture(port)
        probe.start()
        cpu_s = run_locust(host, db_url, users, max_tokens, duration_s, workdir)
        noise, sim_cpu_s = probe.finish(), process_cpu_s(sim.pid) - sim_cpu_before
        truth = truth_records(host)
    finally:
        drops = capture.finish() if capture is not None else 0
        stop(sim)
    measured, tokens, chunks, late, window_s, lags = stampede_requests(db_url)
    result = compare(measured, truth)
    if capture is not None:
        requests, broken = reconstruct(capture.packets, port)
        result.update(wire_errors(measured, {r.request_id: r for r in requests if r.request_id is not None}))
        result.update(capture_segments=len(capture.packets), capture_drops=drops, capture_gaps=broken,
                      capture_cpu_s=capture.cpu_s)  # fmt: skip
    else:
        result.update(wire_errors([], {}))
    # Each user's first request also opens its connection, which the server's clock cannot see.
    result["ttft_error_ms_after_first_requests"] = compare(measured[users:], truth)["ttft_error_ms"]
    result["side_by_side"] = side_by_side(
        np.asarray([m["ttft_ns"] for m in measured]) / 1e6,
        np.concatenate([m["gaps_ns"] for m in measured]) / 1e6,
        truth,
    )
    result.update(
        tool="stampede",
        prompt_tokens_p50=float(np.median([t["prompt_tokens"] for t in truth.values()])),
        streams=users,
        output_tokens=tokens,
        chunks_per_s=chunks / window_s,
        late_chunk_share=late / max(chunks, 1),
        cpu_s=cpu_s,
        cpu_s_per_1k_tokens=1000 * cpu_s / max(tokens, 1),
        simulator_cpu_s=sim_cpu_s,
        machine_sleep_lateness_ms=noise,
        loop_lag_ms_max=max(lags, default=float("nan")),
        loop_lag_ms_p50=float(np.median(lags)) if lags else float("nan"),
    )
    return result


def make_tokenizer(folder: Path, peer_python: str) -> None:
    """A tiny word-level HuggingFace tokenizer folder, built offline (counts come from the server)."""
    script = (
        "import sys\nfrom tokenizers import Tokenizer, models, pre_tokenizers\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "words = ['[UNK]', '[PAD]'] + [f'w{i}' for i in range(1000)] + 'the a of to and is in it you that'.split()\n"
        "tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='[UNK]'))\n"
        "tok.pre_tokenizer = pre_tokenizers.Whitespace()\n"
        "PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='[UNK]', pad_token='[PAD]')"
        ".save_pretrained(sys.argv[1])\n"
    )
    subprocess.run([peer_python, "-c", script, str(folder)], check=True, timeout=300)


def truth_distributions(truth: dict[str, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Every request's true TTFT and every true gap, in ms."""
    ttft = [t["token_written_ns"][0] - t["arrived_ns"] for t in truth.values() if t["token_written_ns"]]
    gaps = [np.diff(t["token_written_ns"]) for t in truth.values() if len(t["token_written_ns"]) > 1]
    return np.asarray(ttft) / 1e6, np.concatenate(gaps) / 1e6


def side_by_side(ttft_ms: np.ndarray, gaps_ms: np.ndarray, truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A tool's TTFT and ITL percentiles beside the truth's, for when requests cannot be matched one by one.

    A difference of percentiles is a lower bound of the per-request error, not the error itself.
    """
    true_ttft, true_gaps = truth_distributions(truth)
    q = (50, 90, 99)
    return {
        "ttft_ms": {f"p{p}": float(np.percentile(ttft_ms, p)) for p in q},
        "true_ttft_ms": {f"p{p}": float(np.percentile(true_ttft, p)) for p in q},
        "itl_ms": {f"p{p}": float(np.percentile(gaps_ms, p)) for p in q},
        "true_itl_ms": {f"p{p}": float(np.percentile(true_gaps, p)) for p in q},
    }


def _aiperf_measured(artifacts: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """AIPerf's per-request TTFTs and inter-chunk gaps (ms), and its count of records."""
    ttft, gaps, count = [], [], 0
    for line in (artifacts / "profile_export.jsonl").read_text().splitlines():
        metrics = json.loads(line).get("metrics", {})
        count += 1
        if "time_to_first_token" in metrics:
            ttft.append(metrics["time_to_first_token"]["value"])
        gaps.extend(metrics.get("inter_chunk_latency", {}).get("value", []))
    return np.asarray(ttft), np.asarray(gaps), count


def _run_aiperf(bin_dir: Path, tokenizer: Path, host: str, users: int, max_tokens: int, requests: int, out: Path):
    command = [str(bin_dir / "aiperf"), "profile", "--model", "stampede-sim", "--tokenizer", str(tokenizer),
               "--url", host, "--endpoint-type", "chat", "--streaming", "--concurrency", str(users),
               "--request-count", str(requests), "--isl", "32", "--isl-stddev", "0", "--osl", str(max_tokens),
               "--osl-stddev", "0", "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
               "--ui", "none", "--artifact-dir", str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # see /work/shared/PEERS.md
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    before = children_cpu_s()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, cwd=out.parent)
    if result.returncode != 0:
        raise SystemExit(f"aiperf failed:\n{(result.stderr or result.stdout)[-3000:]}")
    return children_cpu_s() - before


def bench_aiperf(peer_venv: Path, users: int, max_tokens: int, requests: int, workdir: Path) -> dict[str, Any]:
    """AIPerf on the same load: a warm-up run of ``users`` requests, then ``requests``; compared by distribution.

    AIPerf sends its own X-Request-ID and the simulator answers with, and records, only its own id,
    so AIPerf's requests cannot be matched one by one; its percentiles stand beside the truth's.
    CPU: its whole process tree; the marginal cost is the main run's minus the warm-up's, per token.
    """
    bin_dir = peer_venv / "bin"
    tokenizer = workdir / "tokenizer"
    make_tokenizer(tokenizer, str(bin_dir / "python"))
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    sim = start_simulator(port, workdir / "sim-aiperf.log", users)
    try:
        warm_cpu_s = _run_aiperf(bin_dir, tokenizer, host, users, max_tokens, users, workdir / "warmup")
        last_id = max((int(k) for k in truth_records(host)), default=0)
        cpu_s = _run_aiperf(bin_dir, tokenizer, host, users, max_tokens, requests, workdir / "main")
        with urllib.request.urlopen(f"{host}/sim/requests?since={last_id}", timeout=60) as answer:
            truth = {str(r["id"]): r for r in json.load(answer)["requests"]}
    finally:
        stop(sim)
    ttft, gaps, count = _aiperf_measured(workdir / "main")
    tokens = sum(t["completion_tokens"] for t in truth.values())
    out = side_by_side(ttft, gaps, truth)
    out.update(
        tool="aiperf",
        streams=users,
        requests=count,
        truth_requests=len(truth),
        prompt_tokens_p50=float(np.median([t["prompt_tokens"] for t in truth.values()])),
        tokens_agree=int(gaps.size + ttft.size == tokens),
        output_tokens=tokens,
        cpu_s=cpu_s,
        warmup_cpu_s=warm_cpu_s,
        cpu_s_per_1k_tokens=1000 * cpu_s / max(tokens, 1),
        marginal_cpu_s_per_1k_tokens=1000 * (cpu_s - warm_cpu_s) / max(tokens - users * max_tokens, 1),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="50,200,1000", help="comma-separated concurrencies")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument(
        "--limit-streams",
        default="",
        help="also these concurrencies (ascending), to find the most chunks/s timed within 1 ms at p99",
    )
    parser.add_argument("--prompt-set", default="seeds", help="Stampede's --prompt-set (match the peer's ISL)")
    parser.add_argument("--peer", choices=["aiperf"], help="also run this peer tool on the same load")
    parser.add_argument("--peer-streams", type=int, default=200)
    parser.add_argument("--peer-requests", type=int, default=2600)
    parser.add_argument("--peer-venv", type=Path, default=Path("/tmp/peer-venv"))
    parser.add_argument("--step-base-ms", type=float, help="the simulator's fixed decode step cost (vLLM profile: 12)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    PROMPT_SET[1] = args.prompt_set
    if args.step_base_ms is not None:
        SIMULATOR_ARGS.extend(["--step-base-ms", str(args.step_base_ms)])
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    results: dict[str, Any] = {"machine": {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}}
    results["date"] = time.strftime("%Y-%m-%d")
    runs = []
    for users in (int(s) for s in args.streams.split(",")):
        with tempfile.TemporaryDirectory(prefix="stampede-accuracy-") as tmp:
            runs.append(bench_stampede(users, args.max_tokens, args.duration_s, Path(tmp)))
        print(json.dumps(runs[-1]), flush=True)
    limit: dict[str, Any] = {"streams": None, "chunks_per_s": None}
    for users in (int(s) for s in args.limit_streams.split(",") if s):
        with tempfile.TemporaryDirectory(prefix="stampede-accuracy-") as tmp:
            run = bench_stampede(users, args.max_tokens, args.duration_s, Path(tmp))
        print(json.dumps(run), flush=True)
        runs.append(run)
        if run["itl_error_ms"]["p99"] > 1.0:
            break
        limit = {"streams": users, "chunks_per_s": run["chunks_per_s"]}
    results["within_1_ms_at_p99"] = limit
    print(json.dumps({"within_1_ms_at_p99": limit}), flush=True)
    if args.peer == "aiperf":
        with tempfile.TemporaryDirectory(prefix="stampede-aiperf-") as tmp:
            runs.append(bench_aiperf(args.peer_venv, args.peer_streams, args.max_tokens, args.peer_requests, Path(tmp)))
        print(json.dumps(runs[-1]), flush=True)
    results["runs"] = runs
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
