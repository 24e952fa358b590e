"""A Locust master with two workers against the simulator: the LLM figures the master writes to --csv,
--json-file and --html, merged from the workers' summaries, agree with the stored rows' figures over
the same span (the step figures' own definitions) within the histograms' stated error."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from loadgen.live import RELATIVE_ERROR, ZERO_MS
from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from stampede.schema import Request
from stampede.stepdata import overlapping_samples
from stampede.summary import StepSummary, summarize_step
from stampede.windows import Window

LOCUSTFILE = str(Path(__file__).parents[2] / "loadgen" / "chat.py")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _stored_span(db_url: str, from_s: float, to_s: float) -> tuple[StepSummary, dict[str, list[float]]]:
    """The stored rows' figures over ``[from_s, to_s)`` by the step figures' own definitions, and the
    latencies their percentiles are taken over."""
    with Session(create_engine(db_url)) as session:
        assert len(session.scalars(select(Request.pid).distinct()).all()) == 2  # both workers sent requests
        run_id, target = session.execute(select(Request.run_id, Request.target).limit(1)).one()
        samples = overlapping_samples(session, run_id, target, _at(from_s), _at(to_s))
    window = Window(from_s, to_s)
    ok = [s for s in samples if s.ok and not s.cancelled and window.holds(s.ended_s)]
    values = {
        "ttft_ms": [s.ttft_ms for s in samples
                    if s.ok and s.ttft_ms is not None and window.holds(s.chunk_times_s()[0])],
        "itl_ms": [g for s in samples if s.ok for at, g in zip(s.chunk_times_s()[1:], s.itl_ms, strict=False)
                   if window.holds(at)],
        "tpot_ms": [s.tpot_ms for s in ok if s.tpot_ms is not None],
        "e2e_ms": [s.e2e_ms for s in ok],
    }  # fmt: skip
    return summarize_step(1, window, samples), values


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_masters_merged_figures_agree_with_the_stored_rows(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade(db_url)
    port, master_port = free_port(), free_port()  # not Locust's 5557: other runs on this host may hold it
    simulator = start_simulator("vllm", port, tmp_path / "sim.log")
    try:
        result = subprocess.run(
            # With its web UI, a master that ends the run waits for its workers to stop, and their last
            # reports to come, before it quits; headless, it quits half a second after telling them to.
            [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--autostart", "--autoquit", "5", "--processes", "2",
             "--web-host", "127.0.0.1", "--web-port", str(free_port()), "--master-bind-port", str(master_port),
             "--master-port", str(master_port),
             "--host", f"http://127.0.0.1:{port}", "-u", "8", "-r", "8", "-t", "10s", "--warmup-s", "2",
             "--max-tokens", "32", "--stop-timeout", "5s", "--exit-code-on-error", "0",
             "--csv", str(tmp_path / "out"), "--json-file", str(tmp_path / "out"), "--html", str(tmp_path / "r.html"),
             "OpenAIChatUser"],
            env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True, text=True, timeout=150, cwd=tmp_path,
        )  # fmt: skip
    finally:
        stop(simulator)
    assert result.returncode == 0, result.stderr[-3000:]
    [step] = orjson.loads((tmp_path / "out_llm.json").read_bytes())
    with (tmp_path / "out_llm.csv").open() as f:
        assert [row["requests"] for row in csv.DictReader(f)] == [str(step["requests"])]
    assert step["step"] == 0 and step["errors"] == 0
    summary, stored = _stored_span(db_url, step["from_s"], step["to_s"])
    assert step["requests"] == summary.requests > 40  # every completion in the span, counted once
    assert step["output_tokens_per_s"] == pytest.approx(summary.output_tokens_per_s)  # by each chunk's arrival
    for name, values in stored.items():
        for p in ("p50", "p99"):
            exact = float(np.percentile(values, int(p[1:])))
            merged = step[f"{name}_{p}"]
            assert abs(merged - exact) <= RELATIVE_ERROR * exact + ZERO_MS, (name, p, merged, exact)
    report = (tmp_path / "r.html").read_text()
    assert "LLM figures per step" in report and "ttft_ms_p99" in report
