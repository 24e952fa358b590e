"""The dashboard in a real browser: ``streamlit run`` serves a seeded store and headless Chromium renders
the Sweep page, whose plotly charts must hold both targets' lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stampede.db import upgrade
from stampede.processes import free_port, stop
from tests.unit.dashboard.dashboard_fixtures import APP, Seeder

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
READY_S = 60
ATTEMPTS = 4


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """The dashboard served by ``streamlit run`` on a free loopback port over a seeded SQLite store."""
    if not CHROMIUM.exists():
        # Like the servers the other integration tests need: missing is a failure that says how to fix it.
        pytest.fail("no /usr/bin/chromium: install Debian's package with `apt-get install -y chromium`")
    url = f"sqlite:///{tmp_path / 'stampede.db'}"
    upgrade(url)
    Seeder(url).sweep(name="browser-sweep", slo={"ttft_ms": 300})
    port = free_port()
    log = (tmp_path / "streamlit.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1", "--server.port", str(port),
        ],
        env={**os.environ, "STAMPEDE_DATABASE_URL": url},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_S
        while True:
            assert server.poll() is None, (tmp_path / "streamlit.log").read_text()
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "streamlit did not become healthy"
            time.sleep(0.3)
        yield base
    finally:
        stop(server)
        log.close()


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=15000", "--window-size=1600,2400",
            *args,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_sweep_page_renders_plotly_charts_of_both_targets(dashboard_url: str, tmp_path: Path) -> None:
    # The server's first script run imports pandas and plotly while the browser waits in virtual time:
    # a first load may dump the page skeleton, so load it again until the charts are there.
    for _ in range(ATTEMPTS):
        dom = chromium(tmp_path, "--dump-dom", dashboard_url).stdout
        if "js-plotly-plot" in dom:
            break

    assert "js-plotly-plot" in dom, dom[-2000:]
    assert dom.count('class="main-svg"') >= 5, "fewer plotly charts than the Sweep page draws"
    assert "Output tokens/s vs load" in dom and "TTFT vs load" in dom
    assert "ollama-like" in dom and "vllm-like" in dom
    assert "Knee" in dom
