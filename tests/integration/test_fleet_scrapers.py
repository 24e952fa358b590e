"""Scrapers over HTTP: a tiny local server serves the recorded vLLM, llama.cpp and Ollama responses
(tests/unit/workers/fixtures/), and the agent stores what it scrapes into a real PostgreSQL database.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from simulator.profiles import Flavor, build_profile
from simulator.server import SimServer, serve_in_thread
from tests.unit.workers.fake_nvml import FakeNvml
from workers import gpu, scrapers

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "workers" / "fixtures"
ROUTES = {
    "/vllm/metrics": "vllm_metrics.txt",
    "/llamacpp/metrics": "llamacpp_metrics.txt",
    "/llamacpp/slots": "llamacpp_slots.json",
    "/ollama/api/ps": "ollama_ps.json",
}


class RecordedRuntime(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        name = ROUTES.get(self.path)
        body = (FIXTURES / name).read_bytes() if name else b"not found"
        self.send_response(200 if name else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet


@pytest.fixture
def runtime_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordedRuntime)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_scrape_once_reads_each_runtime_over_http(runtime_url: str) -> None:
    run_id = uuid.uuid4()
    vllm = scrapers.scrape_once("vllm", f"{runtime_url}/vllm", target="vllm-8b", run_id=run_id)
    assert {s.metric for s in vllm} == {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        "vllm:num_preemptions_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
    }
    assert {(s.target, s.run_id) for s in vllm} == {("vllm-8b", run_id)}
    llamacpp = scrapers.scrape_once("llamacpp", f"{runtime_url}/llamacpp")
    assert len([s for s in llamacpp if s.metric.startswith("llamacpp_slot:")]) == 9
    ollama = scrapers.scrape_once("ollama", f"{runtime_url}/ollama/")
    assert {s.target for s in ollama} == {"ollama"}
    with pytest.raises(OSError):
        scrapers.scrape_once("vllm", f"{runtime_url}/missing")


def test_an_error_answer_is_reported_in_the_runtimes_own_words() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.LLAMACPP, {})))  # started without --metrics
    try:
        with pytest.raises(OSError, match=r"/metrics answered HTTP 501: .*Start it with `--metrics`"):
            scrapers.scrape_values("llamacpp", sim.url)
    finally:
        sim.stop()


def test_agent_without_gpu_stores_runtime_samples(runtime_url: str, pg_store: str) -> None:
    args = ["--count", "2", "--interval-s", "0.05", "--scrape", "vllm", f"{runtime_url}/vllm", "vllm-8b"]
    assert gpu.main(args + ["--scrape", "ollama", f"{runtime_url}/ollama", "ollama"], nvml=FakeNvml(driver=False)) == 0
    with psycopg.connect(pg_store.replace("+psycopg", "")) as connection:
        rows = connection.execute("SELECT target, metric, count(*) FROM runtime_samples GROUP BY 1, 2").fetchall()
        gpu_rows = connection.execute("SELECT count(*) FROM gpu_samples").fetchone()
    assert ("vllm-8b", "vllm:kv_cache_usage_perc", 2) in rows
    assert ("ollama", "ollama:vram_fraction", 4) in rows  # two models, two readings
    assert gpu_rows == (0,)


def test_agent_says_once_that_a_runtime_is_away(runtime_url: str, pg_store: str, caplog) -> None:
    missing = f"{runtime_url}/missing"
    args = ["--count", "3", "--interval-s", "0.05", "--scrape", "vllm", missing, "gone"]
    with caplog.at_level(logging.WARNING, logger="workers.gpu"):
        assert gpu.main(args + ["--scrape", "vllm", f"{runtime_url}/vllm", "here"], nvml=FakeNvml(driver=False)) == 0
    assert [r.getMessage() for r in caplog.records if "gone" in r.getMessage()] == [
        f"scraping gone at {missing} failed (OSError: {missing}/metrics answered HTTP 404: not found); "
        "retrying each interval"
    ]
    with psycopg.connect(pg_store.replace("+psycopg", "")) as connection:
        targets = connection.execute("SELECT target, count(*) FROM runtime_samples GROUP BY 1").fetchall()
    assert targets == [("here", 21)]  # 3 readings of 7 values
