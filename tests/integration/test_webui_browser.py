"""Locust's own web UI in a real browser: during a run against the simulator, headless Chromium opens
the page Locust prints and clicks the LLM tab; once the load is stopped with Locust's Stop button (a
request counts when it has ended), the tab's TTFT and output tokens/s agree with the stored rows'
figures over the window it names.

The screenshot it takes is the README's (set STAMPEDE_SCREENSHOT to a path to keep it).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from loadgen.webui import TICK_S
from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.processes import free_port, stop
from stampede.schema import Request
from stampede.stepdata import overlapping_samples
from stampede.summary import StepSummary, summarize_step
from stampede.windows import Window

CHROMIUM = Path("/usr/bin/chromium")
LOCUSTFILE = str(Path(__file__).parents[2] / "loadgen" / "chat.py")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
WINDOW_FILLED_S = 12.0
RELATIVE_ERROR = 0.01
SHOWN_MS = 0.05  # the tab shows one decimal


@pytest.fixture
def locust_ui(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Locust's web UI, running 8 users against the simulator; yields its address, database URL and process."""
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: install Debian's package with `apt-get install -y chromium`")
    db_url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade(db_url)
    sim_port, web_port = free_port(), free_port()
    simulator = start_simulator("vllm", sim_port, tmp_path / "sim.log")
    log = (tmp_path / "locust.log").open("wb")
    locust = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--host", f"http://127.0.0.1:{sim_port}",
         "--web-host", "127.0.0.1", "--web-port", str(web_port), "--autostart", "-u", "8", "-r", "8",
         "--max-tokens", "32", "OpenAIChatUser"],
        env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{web_port}", db_url, locust
    finally:
        stop(locust)
        stop(simulator)
        log.close()


def _tab_rows(base: str) -> dict[str, list[str]]:
    data = httpx.get(f"{base}/stampede/llm.json", timeout=5).json()
    return {row["metric"]: [row["window"], row["step"]] for row in data["table"]}


def _wait_for_a_filled_window(base: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            span = _tab_rows(base).get("Span")
            if span and float(span[0].split("(")[1].split(" s")[0]) >= WINDOW_FILLED_S:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail("the LLM tab never covered a filled window")


class DevTools:
    """Just enough of the Chrome DevTools Protocol: commands on one page, answers matched by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id = ws, 0

    async def __call__(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_str(orjson.dumps({"id": self.next_id, "method": method, "params": params}).decode())
        while True:
            message = orjson.loads((await self.ws.receive()).data)
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return dict(message["result"])

    async def js(self, expression: str) -> Any:
        result = await self("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.5)
        raise AssertionError(f"never true in the page: {expression}")


CHARTS_TAB_JS = """(() => { const p = document.getElementById('stampede-llm-charts');
    return !!p && p.style.display !== 'none' && p.querySelectorAll('svg').length >= 2
        && document.querySelectorAll('main canvas').length > 0; })()"""
STOP_JS = "[...document.querySelectorAll('button')].find(b => b.textContent.trim().toLowerCase() === 'stop').click()"
ROWS_JS = """[...document.querySelectorAll('main table tbody tr')].map(tr =>
    [...tr.querySelectorAll('td')].map(td => td.textContent))"""


async def _open_llm_tab(base: str, port_file: Path, screenshot: Path) -> list[list[str]]:
    port = int(port_file.read_text().split()[0])
    async with aiohttp.ClientSession() as session:
        pages = await (await session.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(p for p in pages if p["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            await tools("Page.enable")
            await tools("Page.navigate", url=base)
            await tools.wait_for("[...document.querySelectorAll('[role=tab]')].some(t => t.textContent === 'LLM')")
            await tools.js("[...document.querySelectorAll('[role=tab]')].find(t => t.textContent === 'LLM').click()")
            await tools.wait_for("document.body.innerText.includes('TTFT p99 (ms)')")
            await tools.wait_for("document.querySelectorAll('#stampede-llm-charts svg polyline').length >= 3")
            assert (await tools.js(ROWS_JS))[0][0] == "Target"  # the tab shows its table while the load runs
            height = await tools.js("document.documentElement.scrollHeight")
            await tools("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1,
                        mobile=False)  # fmt: skip
            shot = await tools("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            # Beside Locust's own charts too: the same panel under the Charts tab's canvases.
            await tools.js("[...document.querySelectorAll('[role=tab]')].find(t => t.textContent === 'Charts').click()")
            await tools.wait_for(CHARTS_TAB_JS)
            # A request counts once it has ended: stop the load (Locust's Stop button), so that every request
            # with a part in the window has, and open the tab again on the figures computed after that.
            await tools.js(STOP_JS)
            await tools.wait_for("document.body.innerText.toUpperCase().includes('STOPPED')")
            await asyncio.sleep(TICK_S + 1.5)
            await tools("Page.navigate", url=f"{base}/?tab=llm")
            await tools.wait_for("document.body.innerText.includes('TTFT p99 (ms)')")
            return list(await tools.js(ROWS_JS))


def _stored_window(db_url: str, start_s: float, end_s: float) -> tuple[StepSummary, list[float]]:
    """The stored rows' figures over ``[start_s, end_s)`` by the step figures' own definitions, and the
    TTFTs of the requests whose first output arrived in it."""
    with Session(create_engine(db_url)) as session:
        run_id, target = session.execute(select(Request.run_id, Request.target).limit(1)).one()
        samples = overlapping_samples(session, run_id, target, _at(start_s), _at(end_s))
    window = Window(start_s, end_s)
    ttfts = [s.ttft_ms for s in samples if s.ok and s.ttft_ms is not None and window.holds(s.chunk_times_s()[0])]
    return summarize_step(1, window, samples), ttfts


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _clock_s(text: str) -> float:
    today = datetime.now(UTC).date()
    return datetime.combine(today, datetime.strptime(text, "%H:%M:%S").time(), UTC).timestamp()


def test_the_llm_tab_shows_the_stored_windows_ttft_and_tokens_per_s(
    locust_ui: tuple[str, str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    base, db_url, locust = locust_ui
    _wait_for_a_filled_window(base)
    profile = tmp_path / "chromium"
    browser = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written, then filled
        screenshot = tmp_path / "locust-llm-tab.png"
        table = asyncio.run(_open_llm_tab(base, port_file, screenshot))
    finally:
        stop(browser)
    if os.environ.get("STAMPEDE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["STAMPEDE_SCREENSHOT"])
    shown = {cells[0]: cells[1:] for cells in table}
    span = shown["Span"][0]  # "HH:MM:SS–HH:MM:SS UTC (D s)"
    clocks, duration = span.split(" UTC")[0].split("–"), float(span.split("(")[1].split(" s")[0])
    start_s, end_s = _clock_s(clocks[0]), _clock_s(clocks[1])
    stop(locust)  # SIGTERM: Locust quits, and its sink stores every record it holds
    stored, ttfts = _stored_window(db_url, start_s, end_s)
    assert stored.requests > 20 and int(shown["Requests"][0]) == stored.requests
    # Tokens by when their chunks arrived; the tab divides by the time the run has had, at most 30 s.
    tokens_per_s = float(shown["Output tokens/s"][0].replace(",", ""))
    assert tokens_per_s * duration == pytest.approx(stored.output_tokens_per_s * stored.measured_s, rel=0.01)
    exact = np.percentile(ttfts, [50, 99])
    for label, want in zip(("TTFT p50 (ms)", "TTFT p99 (ms)"), exact, strict=True):
        assert abs(float(shown[label][0]) - want) <= RELATIVE_ERROR * want + SHOWN_MS, (label, shown[label], want)
