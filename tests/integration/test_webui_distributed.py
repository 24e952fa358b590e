"""A Locust master with two workers against the simulator: the LLM figures the master writes to --csv,
--json-file and --html, merged from the workers' summaries, agree with the rows stored for the step
within the histograms' stated error, and count every stored request once."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from loadgen.live import RELATIVE_ERROR, ZERO_MS
from stampede import metrics
from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from stampede.schema import Request

LOCUSTFILE = str(Path(__file__).parents[2] / "loadgen" / "chat.py")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _stored_step(db_url: str) -> dict[str, list[float]]:
    """The stored step's successful, measured requests: their TTFT, E2E and TPOT, and every ITL gap."""
    with Session(create_engine(db_url)) as session:
        assert len(session.scalars(select(Request.pid).distinct()).all()) == 2  # both workers sent requests
        rows = session.execute(
            select(Request.ttft_ms, Request.e2e_ms, Request.tpot_ms, Request.chunk_offsets_ns).where(
                Request.in_warmup.is_(False), Request.outcome == "ok", Request.step_index == 0
            )
        ).all()
    return {
        "ttft_ms": [r.ttft_ms for r in rows if r.ttft_ms is not None],
        "e2e_ms": [r.e2e_ms for r in rows],
        "tpot_ms": [r.tpot_ms for r in rows if r.tpot_ms is not None],
        "itl_ms": [gap for r in rows for gap in metrics.itl_ms(r.chunk_offsets_ns)],
    }


def test_a_masters_merged_figures_agree_with_the_stored_rows(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade(db_url)
    port = free_port()
    simulator = start_simulator("vllm", port, tmp_path / "sim.log")
    try:
        result = subprocess.run(
            # With its web UI, a master that ends the run waits for its workers to stop, and their last
            # reports to come, before it quits; headless, it quits half a second after telling them to.
            [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--autostart", "--autoquit", "5", "--processes", "2",
             "--web-host", "127.0.0.1", "--web-port", str(free_port()),
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
    stored = _stored_step(db_url)
    assert step["step"] == 0 and step["errors"] == 0
    assert step["requests"] == len(stored["e2e_ms"]) > 40  # every measured request, counted once
    for name, values in stored.items():
        for p in ("p50", "p99"):
            exact = float(np.percentile(values, int(p[1:])))
            merged = step[f"{name}_{p}"]
            assert abs(merged - exact) <= RELATIVE_ERROR * exact + ZERO_MS, (name, p, merged, exact)
    report = (tmp_path / "r.html").read_text()
    assert "LLM figures per step" in report and "ttft_ms_p99" in report
