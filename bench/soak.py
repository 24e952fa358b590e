"""Soak benchmark: does memory stay flat over a long run? Resident memory of each process, every minute.

A vLLM-like simulator and one headless Locust process (``OpenAIChatUser``, ``--streams`` users, closed
loop) run for ``--duration-s``; records go to a store: by default the embedded one, a SQLite file in a
throwaway folder, written by the Locust process's store child (``loadgen/store_process.py``). With
``STAMPEDE_REDIS_URL`` set it is the fleet instead: the Locust process enqueues record batches and
one RQ worker that this script starts stores them into ``STAMPEDE_DATABASE_URL`` (the same SQLite
file when that is unset; PostgreSQL for a real fleet).

Every ``--sample-s`` it reads ``VmRSS`` from ``/proc`` for the Locust process, the store child
(embedded) or the worker (fleet), and the simulator; it prints a row per sample, then a verdict per
process. The rule: **flat** when the mean of the last quarter's samples is within ``--flat-pct`` % of
the mean of the second quarter's (the first quarter is left out: allocators, caches and connection
pools fill while the load ramps up). At the end it counts the run's stored requests by outcome.

    python bench/soak.py                                   # 30 minutes, 200 streams, sampled each minute
    python bench/soak.py --duration-s 120 --streams 20 --sample-s 10   # a quick check that it works
    STAMPEDE_REDIS_URL=redis://127.0.0.1:6379/0 \\
    STAMPEDE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/stampede python bench/soak.py

Linux only (``/proc``). Exit status 0 when every process is flat, 1 when one is not, 2 when the run
was too short to judge (no sample in the second or last quarter).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from stampede.db import make_engine, upgrade
from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from stampede.schema import Request
from stampede.settings import Settings

REPO = Path(__file__).resolve().parent.parent
QUEUE_DRAIN_TIMEOUT_S = 120.0


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a live process in MiB; None when it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def child_running(parent: int, module: str) -> int | None:
    """The pid of ``parent``'s child that runs ``python -m module``, if there is one (it may have restarted)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == parent and module.encode() in command:
            return int(entry.name)
    return None


def quarter_means(samples: list[tuple[float, float]], duration_s: float) -> tuple[float | None, float | None]:
    """Mean of the samples taken in the second quarter of the run, and in the last."""

    def mean(low: float, high: float) -> float | None:
        values = [v for t, v in samples if low <= t < high]
        return sum(values) / len(values) if values else None

    return mean(duration_s / 4, duration_s / 2), mean(duration_s * 3 / 4, float("inf"))


def verdict(samples: list[tuple[float, float]], duration_s: float, flat_pct: float) -> tuple[str, int]:
    """A line saying whether one process's memory stayed flat, and its exit status (0 flat, 1 not, 2 unknown)."""
    second, last = quarter_means(samples, duration_s)
    if second is None or last is None:
        return "too short to judge: no sample in the second or the last quarter", 2
    change_pct = (last - second) / second * 100
    text = f"second quarter {second:.1f} MiB, last quarter {last:.1f} MiB ({change_pct:+.1f} %)"
    if abs(change_pct) <= flat_pct:
        return f"flat: {text}", 0
    return f"NOT FLAT: {text}, beyond {flat_pct:g} %", 1


def stored_outcomes(database_url: str, run_id: str) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            query = select(Request.outcome, func.count()).where(Request.run_id == uuid.UUID(run_id))
            return {outcome: count for outcome, count in connection.execute(query.group_by(Request.outcome))}
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=1800.0, help="how long the load runs (default 30 min)")
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams, one Locust user each")
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between memory samples")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--flat-pct", type=float, default=10.0, help="last quarter within this %% of the second")
    args = parser.parse_args()

    settings = Settings()
    fleet = settings.redis_url is not None
    workdir = Path(tempfile.mkdtemp(prefix="stampede-soak-"))
    database_url = os.environ.get("STAMPEDE_DATABASE_URL") or f"sqlite:///{workdir / 'soak.db'}"
    env = {**os.environ, "STAMPEDE_DATABASE_URL": database_url}
    upgrade(database_url)
    run_id = str(uuid.uuid4())
    print(f"soak: {args.streams} streams for {args.duration_s:g} s, {'fleet (RQ worker)' if fleet else 'embedded'} "
          f"store {database_url.split('@')[-1]}; logs in {workdir}", flush=True)  # fmt: skip

    processes: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        sim = start_simulator("vllm", port, workdir / "simulator.log")
        processes.append(sim)
        worker = None
        if fleet:
            with (workdir / "worker.log").open("wb") as log:
                worker = subprocess.Popen([sys.executable, "-m", "workers"], stdout=log, stderr=subprocess.STDOUT,
                                          env=env, cwd=REPO)  # fmt: skip
            processes.append(worker)
        command = [sys.executable, "-m", "locust", "-f", str(REPO / "loadgen" / "chat.py"), "--headless",
                   "--host", f"http://127.0.0.1:{port}", "-u", str(args.streams), "-r", str(args.streams),
                   "-t", f"{args.duration_s:g}s", "--stop-timeout", "60", "--exit-code-on-error", "0",
                   "--max-tokens", str(args.max_tokens), "--run-id", run_id, "OpenAIChatUser"]  # fmt: skip
        with (workdir / "locust.log").open("wb") as log:
            locust = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        processes.append(locust)

        second = "worker" if fleet else "store child"
        names = ["locust", second, "simulator"]
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        print(f"{'minute':>7} " + " ".join(f"{name + ' MiB':>16}" for name in names), flush=True)
        started = time.monotonic()
        next_sample = started
        while locust.poll() is None:
            if time.monotonic() >= next_sample:
                elapsed_s = time.monotonic() - started
                pids = {
                    "locust": locust.pid,
                    second: worker.pid if worker is not None else child_running(locust.pid, "loadgen.store_process"),
                    "simulator": sim.pid,
                }
                row = []
                for name in names:
                    value = rss_mib(pids[name])
                    if value is not None and elapsed_s <= args.duration_s:
                        samples[name].append((elapsed_s, value))
                    row.append(f"{value:16.1f}" if value is not None else f"{'-':>16}")
                print(f"{elapsed_s / 60:7.1f} " + " ".join(row), flush=True)
                next_sample += args.sample_s
            time.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        if locust.returncode != 0:
            print(f"locust exited with status {locust.returncode}; see {workdir / 'locust.log'}")
            return 1
        if fleet:
            queue = Queue(settings.queue_name, connection=Redis.from_url(settings.redis_url.get_secret_value()))
            deadline = time.monotonic() + QUEUE_DRAIN_TIMEOUT_S
            while queue.count and time.monotonic() < deadline:
                time.sleep(1)
    finally:
        for process in reversed(processes):
            stop(process)

    outcomes = stored_outcomes(database_url, run_id)
    print(f"stored requests of run {run_id}: {sum(outcomes.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items())) or 'none'})")  # fmt: skip
    print(f"rule: flat when the last quarter's mean is within {args.flat_pct:g} % of the second quarter's")
    codes = []
    for name in names:
        text, code = verdict(samples[name], args.duration_s, args.flat_pct)
        print(f"{name:>12}: {text}")
        codes.append(code)
    return 1 if 1 in codes else max(codes)


if __name__ == "__main__":
    sys.exit(main())
