"""Every command the README names, as a newcomer tries them, each in a new directory with no database
and no STAMPEDE_* setting, against the simulator: each stores what it measured into the default
SQLite file it creates, shows it, and exits within a bound that a two-minute exit (a store that
failed, waited out) would break.

Before: in a new directory, `locust -f loadgen/chat.py ... --headless -u 4 -t 6s` stored nothing
(`no such table: runs`) and took 2 minutes to exit; only `stampede demo` worked, as it made the schema.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from stampede.db import get_engine
from stampede.demo import start_simulator
from stampede.locust_launch import sent_requests
from stampede.processes import free_port, stop
from stampede.settings import get_settings
from tests.integration.locust_runs import BIN, REPO, locust, no_stray_files, start, user_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Start-up (imports, the new schema) and shutdown on a busy 2-core machine, beyond the run's own length.
OVERHEAD_S = 40.0


@pytest.fixture(scope="module")
def ollama_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = start_simulator("ollama", port, tmp_path_factory.mktemp("sim") / "sim.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def stored(folder: Path) -> tuple[int, list[str]]:
    """Request rows Locust counts (all but those the run's end cut short) and run statuses in the directory's
    default SQLite file."""
    with sqlite3.connect(folder / "stampede.db") as db:
        requests = db.execute("SELECT count(*) FROM requests WHERE outcome != 'cancelled'").fetchone()[0]
        return requests, [row[0] for row in db.execute("SELECT status FROM runs")]


def stampede(folder: Path, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "stampede"), *args], cwd=folder, env=user_env(folder), capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


def test_1_demo_with_short_steps(tmp_path: Path) -> None:
    started = time.monotonic()
    result = stampede(tmp_path, "demo", "--steps", "1,2", "--step-duration-s", "3", "--warmup-s", "1",
                      timeout_s=2 * 2 * 3 + 2 * OVERHEAD_S)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ollama-like" in result.stdout and "vllm-like" in result.stdout
    requests, statuses = stored(tmp_path)
    assert requests > 0 and statuses == ["finished"]
    assert time.monotonic() - started < 2 * 2 * 3 + 2 * OVERHEAD_S


def test_2_locust_headless_stores_every_request_and_exits_promptly(tmp_path: Path, ollama_sim: str) -> None:
    run = locust(tmp_path, user_env(tmp_path), ollama_sim, "OllamaChatUser", "--headless", "-u", "4", "-t", "6s",
                 "--json")  # fmt: skip
    code, ended = run.finish(6 + OVERHEAD_S + 30)
    assert code == 0, run.text()[-3000:]  # requests cut at the run's end are stored, not failures
    assert ended - run.started < 6 + OVERHEAD_S
    assert stored(tmp_path) == (sent_requests(run.stdout()), ["finished"])
    assert no_stray_files(tmp_path) == []


def test_3_locust_web_ui_with_autostart_and_autoquit(tmp_path: Path, ollama_sim: str) -> None:
    web = ["--web-host", "127.0.0.1", "--web-port", str(free_port())]
    run = locust(tmp_path, user_env(tmp_path), ollama_sim, "OllamaChatUser", "--autostart", "--autoquit", "1",
                 "-u", "2", "-t", "5s", *web, "--json")  # fmt: skip
    code, ended = run.finish(5 + OVERHEAD_S + 30)
    assert code == 0, run.text()[-3000:]  # requests cut at the run's end are stored, not failures
    assert ended - run.started < 5 + 1 + OVERHEAD_S
    assert stored(tmp_path) == (sent_requests(run.stdout()), ["finished"])


def test_4_locust_web_ui_driven_over_http_then_ctrl_c(tmp_path: Path, ollama_sim: str) -> None:
    port = free_port()
    run = locust(tmp_path, user_env(tmp_path), ollama_sim, "OllamaChatUser", "--web-host", "127.0.0.1",
                 "--web-port", str(port), "--json")  # fmt: skip
    ui = f"http://127.0.0.1:{port}"
    try:
        run.wait_for("Starting web interface", OVERHEAD_S)
        deadline = time.monotonic() + OVERHEAD_S
        while True:
            try:
                httpx.get(ui, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, run.text()[-3000:]
                time.sleep(0.3)
        swarm = httpx.post(f"{ui}/swarm", data={"user_count": 2, "spawn_rate": 2, "host": ollama_sim}, timeout=10)
        assert swarm.json()["success"], swarm.text
        time.sleep(5)
        assert httpx.post(f"{ui}/stop", timeout=30).json()["success"]
        counted = sum(e["num_requests"] for e in httpx.get(f"{ui}/stats/requests", timeout=10).json()["stats"]
                      if e["name"] != "Aggregated")  # fmt: skip
    finally:
        run.process.send_signal(signal.SIGINT)  # Ctrl-C: how a web UI user ends Locust
        signalled = time.monotonic()
    code, ended = run.finish(60)
    assert ended - signalled < 20, f"exited {ended - signalled:.0f} s after Ctrl-C"
    assert counted > 0
    assert stored(tmp_path) == (counted, ["finished"])  # a run stopped from the UI is over, not cut short


def test_5_sweep_then_report_then_the_dashboard(
    tmp_path: Path, ollama_sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["sweep", "--host", ollama_sim, "--api", "ollama_chat", "--steps", "1,2", "--step-duration-s", "3",
            "--warmup-s", "1"]  # fmt: skip
    started = time.monotonic()
    sweep = stampede(tmp_path, *args, timeout_s=6 + 2 * OVERHEAD_S)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert time.monotonic() - started < 6 + OVERHEAD_S
    requests, statuses = stored(tmp_path)
    assert requests > 0 and statuses == ["finished"]

    report = stampede(tmp_path, "report", timeout_s=OVERHEAD_S)
    assert report.returncode == 0, report.stderr
    assert report.stdout == sweep.stdout  # the same summary table, read back

    page = dashboard(tmp_path, monkeypatch)
    assert len(page.get("plotly_chart")) >= 2  # throughput and latency against load


def test_6_report_and_dashboard_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = stampede(tmp_path, "report", timeout_s=OVERHEAD_S)
    assert report.returncode == 2
    assert report.stderr.strip() == "error: no runs stored yet: run `stampede demo` or `stampede sweep` first"
    page = dashboard(tmp_path, monkeypatch)
    assert [info.value for info in page.info][0].startswith("No runs in the results store yet")


def dashboard(folder: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """``streamlit run <repo>/dashboard/app.py`` in ``folder``, headless, must answer on its health
    endpoint; the default page, run by Streamlit's own test harness in ``folder``, is returned after
    checking it raised nothing. (Headless Chromium, as in test_dashboard_browser.py, renders the page
    there but not always within its time budget on a busy machine, so the page's content is read from
    the harness; the browser test covers the charts.)"""
    port = free_port()
    server = start(folder, user_env(folder), str(BIN / "streamlit"), "run", str(REPO / "dashboard" / "app.py"),
                   "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.address",
                   "127.0.0.1", "--server.port", str(port), name="streamlit")  # fmt: skip
    try:
        deadline = time.monotonic() + OVERHEAD_S
        while True:
            assert server.process.poll() is None, server.text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "streamlit did not become healthy"
            time.sleep(0.3)
    finally:
        stop(server.process)
    monkeypatch.chdir(folder)
    for name in [n for n in os.environ if n.startswith("STAMPEDE_")]:
        monkeypatch.delenv(name)
    # The default URL, sqlite:///stampede.db, is relative: engines this process cached for another
    # directory must not answer for this one (a dashboard process has one directory).
    get_settings.cache_clear()
    get_engine.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        page = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90).run()
    finally:
        get_settings.cache_clear()
    assert not page.exception, page.exception
    assert [title.value for title in page.title] == ["Sweep"]
    return page
