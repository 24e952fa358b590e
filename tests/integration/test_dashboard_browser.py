"""The dashboard in a real browser: ``streamlit run`` serves a seeded store and headless Chromium, driven
over its DevTools protocol, opens each page at its own URL, draws the Sweep page's plotly charts and shows
the steps table with labels and units."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from stampede.db import upgrade
from stampede.processes import free_port, stop
from tests.unit.dashboard.dashboard_fixtures import APP, Seeder

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
READY_S = 60
# The first load of a page imports pandas and plotly on the server: seconds on a busy machine.
PAGE_S = 60
# Each page's URL and the heading it shows.
PAGES = {
    "sweep": "Sweep",
    "runs": "Runs",
    "requests": "Requests",
    "gpu": "GPU and runtime",
    "compare": "Compare runs",
}
SETTLED = (
    "document.querySelector('[data-test-script-state=\"notRunning\"]') !== null"
    " && document.querySelector('h1') !== null"
)


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """The dashboard served by ``streamlit run`` on a free loopback port over a seeded SQLite store."""
    if not CHROMIUM.exists():
        # Like the servers the other integration tests need: missing is a failure that says how to fix it.
        pytest.fail("no /usr/bin/chromium: install Debian's package with `apt-get install -y chromium`")
    url = f"sqlite:///{tmp_path / 'stampede.db'}"
    upgrade(url)
    seeder = Seeder(url)
    seeder.sweep(name="browser-sweep", slo={"ttft_ms": 300})
    seeder.sweep(name="browser-sweep")  # Compare needs two runs
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


class Browser:
    """One headless Chromium tab, driven over the DevTools protocol in real time (a page's websocket
    traffic and ``st.switch_page`` do not settle under ``--virtual-time-budget``)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        sent = next(self._ids)
        self._ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == sent:
                assert "error" not in message, message
                return dict(message["result"])

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, until: str = SETTLED) -> None:
        """Load ``url`` and wait until ``until`` (JavaScript) holds."""
        # A mark on the old document's window, so that its state is never taken for the new one's.
        self.evaluate("window.previousDocument = true")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + PAGE_S
        while not self.evaluate(f"window.previousDocument === undefined && {until}"):
            assert time.monotonic() < deadline, f"{url}: never {until}; page text: {self.text()[:2000]}"
            time.sleep(0.3)

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    port = free_port()
    chromium = subprocess.Popen(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1600",
            f"--remote-debugging-port={port}", "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_S
        while True:
            try:
                tabs = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=1).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.2)
        tab = next(t for t in tabs if t["type"] == "page")
        with connect(tab["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Browser(ws)
    finally:
        stop(chromium)


def test_every_page_opens_at_its_own_url_without_a_page_not_found_dialog(dashboard_url: str, browser: Browser) -> None:
    for path, heading in PAGES.items():
        browser.open(f"{dashboard_url}/{path}")
        assert browser.evaluate("document.querySelector('h1').innerText") == heading, path
        assert "Page not found" not in browser.text(), path
        assert browser.evaluate("location.pathname") == f"/{path}"

    browser.open(f"{dashboard_url}/", until=f"location.pathname == '/sweep' && {SETTLED}")
    assert browser.evaluate("document.querySelector('h1').innerText") == "Sweep"
    assert "Page not found" not in browser.text()


def test_sweep_page_renders_plotly_charts_of_both_targets(dashboard_url: str, browser: Browser) -> None:
    browser.open(f"{dashboard_url}/sweep", until=f"document.querySelectorAll('.main-svg').length >= 5 && {SETTLED}")
    text = browser.text()
    assert "Output tokens/s vs load" in text and "TTFT vs load" in text
    assert "ollama-like" in text and "vllm-like" in text
    assert "Knee" in text


def test_the_steps_table_heads_its_columns_with_labels_and_units(dashboard_url: str, browser: Browser) -> None:
    browser.open(f"{dashboard_url}/sweep", until=f"document.querySelector('table[role=grid] th') !== null && {SETTLED}")
    # The grid draws on a canvas; its accessible twin holds the headers (cells there are the raw values, so
    # the rounding is pinned by the page's column config in the unit tests).
    headers = browser.evaluate("[...document.querySelectorAll('table[role=grid] th')].map(h => h.innerText)")
    assert headers[:6] == ["Target", "Step", "Users", "Request rate (requests/s)", "Load", "Measured (s)"]
    assert "Requests/s" in headers and "Output tokens/s" in headers
    assert not [h for h in headers if "_" in h]
