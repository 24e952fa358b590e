"""The seeds' own test, repeated: 50 parallel 1,000-word stories, each run's step checked against the server.

Starts the vLLM-like simulator with a fixed ``--decode-ms`` step whatever the batch (so 50 streams get
``50 x 1000 / decode-ms`` tokens/s) and story-long answers (an EOS-like draw of mean
``--mean-output-tokens``, capped by ``--max-tokens``), then runs the command a user runs, ``--runs``
times, each into a fresh SQLite file:

    stampede sweep --host URL --model stampede-sim --runtime vllm --steps 50 --step-duration-s 30 \
        --warmup-s 5 --max-tokens 1500 --prompt-set seeds

Per run it prints the step's output tokens/s as reported (tokens that arrived in its window), the
tokens/s the simulator wrote inside that window (its ground truth), the server's own
``vllm:generation_tokens_total`` over the scrapes inside the window, the client's count over that same
span, and their difference; then the largest differences over all runs. Exit status 1 when one is 3 %
or more.

    python bench/seeds_stories.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from stampede.report import step_summaries
from stampede.schema import Step
from stampede.stepdata import step_window

TOLERANCE_PCT = 3.0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", default="50")
    parser.add_argument("--step-duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--max-tokens", type=int, default=1500)
    parser.add_argument("--mean-output-tokens", type=float, default=1300.0)
    parser.add_argument("--decode-ms", type=float, default=20.0)
    return parser.parse_args()


def _truth_tokens_per_s(url: str, from_s: float, to_s: float) -> float:
    with urllib.request.urlopen(f"{url}/sim/requests", timeout=30) as answer:
        truth = json.load(answer)
    to_unix_ns = truth["clock"]["unix_ns"] - truth["clock"]["monotonic_ns"]
    written = sum(from_s <= (at + to_unix_ns) / 1e9 < to_s for r in truth["requests"] for at in r["token_written_ns"])
    return written / (to_s - from_s)


def _run_once(url: str, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    db_url = f"sqlite:///{folder}/results.db"
    command = [
        sys.executable, "-m", "stampede", "sweep", "--host", url, "--model", "stampede-sim", "--runtime", "vllm",
        "--steps", args.steps, "--step-duration-s", str(args.step_duration_s), "--warmup-s", str(args.warmup_s),
        "--max-tokens", str(args.max_tokens), "--prompt-set", "seeds", "--target-name", "sim",
    ]  # fmt: skip
    env = {**os.environ, "STAMPEDE_DATABASE_URL": db_url}
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{result.stderr[-3000:]}")
    print(result.stdout, flush=True)
    run_id = uuid.UUID(result.stderr.split()[1].rstrip(":"))
    with Session(create_engine(db_url)) as session, session.begin():
        step = step_summaries(session, run_id)[-1].summary
        window = step_window(session.scalars(select(Step).order_by(Step.index.desc()).limit(1)).one())
    truth = _truth_tokens_per_s(url, window.opened_s, window.closed_s)
    if step.server_output_tokens_per_s is None or step.checked_output_tokens_per_s is None:
        raise SystemExit("no vllm:generation_tokens_total scrapes inside the window")
    return {
        "reported": step.output_tokens_per_s,
        "truth": truth,
        "vs_truth_pct": 100 * (step.output_tokens_per_s / truth - 1),
        "server": step.server_output_tokens_per_s,
        "client_same_span": step.checked_output_tokens_per_s,
        "vs_server_pct": step.server_difference_pct or 0.0,
        "requests_per_s": step.requests_per_s,
        "in_flight": step.mean_in_flight,
        "window_s": window.length_s,
    }


def main() -> None:
    args = _parse()
    port = free_port()
    sim_args = ("--step-base-ms", str(args.decode_ms), "--step-per-seq-ms", "0",
                "--mean-output-tokens", str(args.mean_output_tokens))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        simulator = start_simulator("vllm", port, Path(tmp) / "simulator.log", *sim_args)
        try:
            rows = []
            for n in range(args.runs):
                folder = Path(tmp) / f"run{n}"
                folder.mkdir()
                rows.append(_run_once(f"http://127.0.0.1:{port}", args, folder))
                print(json.dumps({"run": n + 1} | {k: round(v, 2) for k, v in rows[-1].items()}), flush=True)
        finally:
            stop(simulator)
    worst_truth = max(abs(r["vs_truth_pct"]) for r in rows)
    worst_server = max(abs(r["vs_server_pct"]) for r in rows)
    print(f"largest difference over {len(rows)} runs: {worst_truth:.2f} % from the simulator's truth, "
          f"{worst_server:.2f} % from its vllm:generation_tokens_total")  # fmt: skip
    if max(worst_truth, worst_server) >= TOLERANCE_PCT:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
