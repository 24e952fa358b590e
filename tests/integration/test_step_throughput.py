"""Step figures against the simulator, whose decode step is a fixed 20 ms (``--step-per-seq-ms 0``).

The seeds' test, 50 parallel stories (about 1,000 tokens, an EOS-like draw capped at 1,200: 20 s
each, as long as the step): the step's output tokens/s, counted by arrival time, agrees within 3 %
with the tokens the simulator wrote inside the step's window (its ground truth) and with its own
``vllm:generation_tokens_total`` over the same span; the table says the step is too short for its
requests. Requests straddle both edges of the window, which request-based figures got wrong (3 or 49
requests counted in the same step by chance, tokens from after the window credited to it). The same
in open loop, where requests straddle every edge. And ``--step-duration-s auto``, whose steps end
once their windows hold enough; and requests Locust kills at the end, kept with their chunks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from stampede.db import upgrade
from stampede.locust_launch import locustfiles
from stampede.report import step_summaries
from stampede.schema import Request, Step
from stampede.stepdata import step_window
from stampede.summary import StepSummary
from tests.integration.test_locust_simulator import simulator

DECODE_20_MS = ("--step-base-ms", "20", "--step-per-seq-ms", "0", "--seed", "3")
SWEEP = ("--model", "stampede-sim", "--runtime", "vllm", "--step-duration-s", "20", "--warmup-s", "2",
         "--prompt-set", "seeds", "--target-name", "sim")  # fmt: skip
TOLERANCE = 0.03
RUN_TIMEOUT_S = 150


def truth_tokens(host: str, from_s: float, to_s: float) -> int:
    """Tokens the simulator handed to its sockets in ``[from_s, to_s)`` (wall clock, via its clock anchor)."""
    with urllib.request.urlopen(f"{host}/sim/requests", timeout=30) as answer:
        truth = json.load(answer)
    to_unix_ns = truth["clock"]["unix_ns"] - truth["clock"]["monotonic_ns"]
    return sum(
        from_s <= (written + to_unix_ns) / 1e9 < to_s for r in truth["requests"] for written in r["token_written_ns"]
    )


def sweep_with_truth(
    tmp_path: Path, simulator_args: tuple[str, ...], sweep_args: tuple[str, ...]
) -> tuple[StepSummary, float, str]:
    """Sweep the simulator (one step); returns its summary, the tokens/s the simulator wrote inside the
    step's window, and the sweep's table."""
    db_url = f"sqlite:///{tmp_path}/results.db"
    with simulator(tmp_path, "vllm", *simulator_args) as host:
        result = subprocess.run(
            [sys.executable, "-m", "stampede", "sweep", "--host", host, *sweep_args],
            env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        run_id = uuid.UUID(result.stderr.split()[1].rstrip(":"))
        with Session(create_engine(db_url)) as session, session.begin():
            [step] = step_summaries(session, run_id)
            window = step_window(session.scalars(select(Step)).one())
        written = truth_tokens(host, window.opened_s, window.closed_s)
    return step.summary, written / window.length_s, result.stdout


def assert_agrees_with_the_server(s: StepSummary, truth_per_s: float) -> None:
    assert abs(s.output_tokens_per_s / truth_per_s - 1) < TOLERANCE, (s.output_tokens_per_s, truth_per_s)
    assert s.server_output_tokens_per_s is not None and s.checked_output_tokens_per_s is not None
    assert abs(s.checked_output_tokens_per_s / s.server_output_tokens_per_s - 1) < TOLERANCE, s
    assert not s.server_disagrees


def test_fifty_stories_count_the_tokens_the_server_wrote_in_the_window(tmp_path: Path) -> None:
    stories = (*DECODE_20_MS, "--mean-output-tokens", "1000")
    s, truth_per_s, table = sweep_with_truth(tmp_path, stories, ("--steps", "50", "--max-tokens", "1200", *SWEEP))
    assert 40 <= s.mean_in_flight <= 50.5, s  # the 50 users' requests, measured
    assert_agrees_with_the_server(s, truth_per_s)
    [row] = [line for line in table.splitlines() if line.startswith("sim ")]
    assert "too short for its requests: lengthen to" in row, table


def test_open_loop_counts_the_tokens_the_server_wrote_in_the_window(tmp_path: Path) -> None:
    # 4 requests/s (Poisson) of about 200 tokens (4 s): some 16 in flight, many straddling an edge.
    answers = (*DECODE_20_MS, "--mean-output-tokens", "200")
    s, truth_per_s, _ = sweep_with_truth(tmp_path, answers, ("--rates", "4", "--max-tokens", "300", *SWEEP))
    assert_agrees_with_the_server(s, truth_per_s)
    assert s.load_reached and s.opened_after_s > 2  # the first request's end, plus the warm-up


def test_auto_steps_end_once_their_windows_hold_enough_completions(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/auto.db"
    sweep = ("--steps", "2,4", "--step-duration-s", "auto", "--max-step-duration-s", "60", "--warmup-s", "1",
             "--max-tokens", "16", "--target-name", "sim")  # fmt: skip
    started = time.monotonic()
    with simulator(tmp_path, "vllm") as host:
        result = subprocess.run(
            [sys.executable, "-m", "stampede", "sweep", "--host", host, *sweep],
            env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=tmp_path,
        )
    took_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = uuid.UUID(result.stderr.split()[1].rstrip(":"))
    with Session(create_engine(db_url)) as session, session.begin():
        steps = step_summaries(session, run_id)
    assert [s.summary.users for s in steps] == [2, 4]
    # Requests of about 0.2 s: 30 completions take seconds, far from the 60 s maximum.
    assert all(s.summary.requests >= 30 and not s.summary.too_short for s in steps), steps
    assert all(s.summary.measured_s < 30 for s in steps) and took_s < 90, (took_s, steps)


def test_requests_running_when_locust_kills_its_users_are_kept_as_cancelled_with_their_chunks(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/killed.db"
    upgrade(db_url)
    # No --stop-timeout: Locust kills each user's greenlet at the end, mid-answer (2,000 tokens take 24 s).
    command = [sys.executable, "-m", "locust", "-f", locustfiles().split(",")[0], "--headless", "--json",
               "-u", "4", "-r", "4", "-t", "3s", "--max-tokens", "2000", "--ignore-eos", "OpenAIChatUser"]  # fmt: skip
    with simulator(tmp_path, "vllm") as host:
        result = subprocess.run(
            [*command, "--host", host],
            env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=tmp_path,
        )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: Locust counts them as failures
    with Session(create_engine(db_url)) as session:
        rows = session.execute(select(Request.outcome, Request.output_chunks, Request.e2e_ms)).all()
    assert [outcome for outcome, _, _ in rows] == ["cancelled"] * 4
    # Each kept what came in about 3 s at a 12 ms step, and ended when it was killed.
    assert all(100 < chunks < 300 and 2_000 < e2e_ms < 4_500 for _, chunks, e2e_ms in rows), rows
