"""The simulator server: routes requests to the flavour's API module and owns the engine runtime.

:meth:`SimServer.start` listens on the running event loop; :func:`serve_in_thread` runs a server on
its own loop in a daemon thread, for tests and embedded use.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from simulator import llamacpp_api, ollama_api, openai_api
from simulator.faults import FaultKind, FaultPicker
from simulator.groundtruth import RequestTruth, TruthLog
from simulator.http import Handler, HttpConnection, Request, Response
from simulator.metrics import SimCollector, render
from simulator.profiles import Flavor, Profile
from simulator.runtime import Runtime

_HTTP_FAULTS = {
    FaultKind.HTTP_429: (429, "Too many requests, please retry later."),
    FaultKind.HTTP_500: (500, "Internal server error (simulated)."),
    FaultKind.HTTP_503: (503, "Service unavailable (simulated)."),
}


@dataclass(frozen=True, slots=True)
class HttpFault:
    """An error answer decided before the request reaches the engine."""

    status: int
    message: str
    headers: dict[str, str]


class SimServer:
    """One simulated runtime: its engine replicas, ground truth, faults and HTTP routes."""

    def __init__(
        self,
        profile: Profile,
        api_key: str | None = None,
        truth_limit: int = 10_000,
        truth_path: Path | None = None,
        llamacpp_metrics: bool = False,
    ) -> None:
        """``llamacpp_metrics``: serve llama-server's ``/metrics``, which the real one only does with ``--metrics``."""
        self.profile = profile
        self.api_key = api_key
        self.truth = TruthLog(truth_limit, truth_path)
        self.runtime = Runtime(profile, self.truth)
        self.faults = FaultPicker(profile.faults, profile.seed)
        self.collector = SimCollector(profile.flavor, self.runtime, profile.models[0])
        self.started_ns = time.monotonic_ns()
        self.started_unix_s = int(time.time())
        self._routes: dict[tuple[str, str], Handler] = {}
        self._server: asyncio.Server | None = None
        self.add("GET", "/sim/requests", self._sim_requests)
        openai_api.register(self)
        if profile.flavor is Flavor.OLLAMA:
            ollama_api.register(self)
        elif profile.flavor is Flavor.VLLM or llamacpp_metrics:
            self.add("GET", "/metrics", self._metrics)
        if profile.flavor is Flavor.LLAMACPP:
            llamacpp_api.register(self, metrics=llamacpp_metrics)
            # llama-server loads its model before it listens and keeps it: /health answers 503 until then.
            self.runtime.preload(time.monotonic_ns())
        if profile.flavor is Flavor.VLLM:
            self.add("GET", "/health", lambda req, resp: resp.send(200, b"", "application/json"))
            self.add("GET", "/version", lambda req, resp: resp.send_json(200, {"version": "0.11.0"}))

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    # --- helpers for the API modules ----------------------------------------------------------------
    def served_model(self, requested: object) -> str | None:
        """The served name ``requested`` refers to, or None if this server does not serve it.

        A missing name means the default model; Ollama-style ``:latest`` tags match the bare name.
        llama-server serves one model and answers to any name, echoing it back.
        """
        if requested is None or requested == "":
            return self.profile.models[0]
        if self.profile.flavor is Flavor.LLAMACPP:
            return requested if isinstance(requested, str) else self.profile.models[0]
        if not isinstance(requested, str):
            return None
        name = requested.removesuffix(":latest") if self.profile.flavor is Flavor.OLLAMA else requested
        return name if name in self.profile.models else None

    def open_truth(self, request: Request) -> RequestTruth:
        return self.truth.open(request.path, time.monotonic_ns())

    def refuse(self, truth: RequestTruth, status: int) -> None:
        """Record that a request was answered with an error before reaching the engine."""
        truth.status = status
        truth.outcome = "error"
        self.truth.close(truth, time.monotonic_ns())

    def pick_fault(self, request: Request) -> FaultKind | None:
        """This request's fault: its X-Sim-Fault header, else a seeded draw. ValueError on a bad header."""
        elapsed_s = (time.monotonic_ns() - self.started_ns) / 1e9
        return self.faults.pick(elapsed_s, request.headers.get("x-sim-fault"))

    def http_fault(self, fault: FaultKind | None) -> HttpFault | None:
        """The error answer for an HTTP-level fault, None for no fault or a mid-stream one."""
        if fault not in _HTTP_FAULTS:
            return None
        status, message = _HTTP_FAULTS[fault]
        headers = {"Retry-After": str(self.profile.faults.retry_after_s)} if status == 429 else {}
        return HttpFault(status, message, headers)

    # --- routing ------------------------------------------------------------------------------------
    def route(self, request: Request, response: Response) -> None:
        handler = self._routes.get((request.method, request.path))
        try:
            if handler is not None:
                handler(request, response)
            elif any(path == request.path for _, path in self._routes):
                response.send(405, b"Method Not Allowed", "text/plain")
            else:
                self._not_found(response)
        except Exception as exc:  # a bug must answer 500, not hang the client
            if not response.done and not response.streaming:
                response.send_json(500, {"error": f"simulator error: {exc!r}"})
            raise

    def _not_found(self, response: Response) -> None:
        if self.profile.flavor is Flavor.OLLAMA:
            response.send(404, b"404 page not found", "text/plain")
        elif self.profile.flavor is Flavor.VLLM:
            response.send_json(404, {"detail": "Not Found"})
        else:
            response.send_json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def _sim_requests(self, request: Request, response: Response) -> None:
        try:
            after = int(request.query.get("since", "0"))
        except ValueError:
            response.send_json(400, {"error": "since must be an integer request id"})
            return
        body = {
            "profile": self.profile.flavor.value,
            "clock": self.truth.anchor,
            "requests": self.truth.since(after),
        }
        response.send(200, orjson.dumps(body), "application/json")

    def _metrics(self, request: Request, response: Response) -> None:
        response.send(200, render(self.collector), "text/plain; version=0.0.4; charset=utf-8")

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port."""
        loop = asyncio.get_running_loop()
        factory: Callable[[], HttpConnection] = lambda: HttpConnection(self.route)  # noqa: E731
        self._server = await loop.create_server(factory, host, port, backlog=4096, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.runtime.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        self.truth.shutdown()


@dataclass
class ThreadedServer:
    """A server running on its own event loop in a daemon thread."""

    server: SimServer
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def serve_in_thread(server: SimServer, host: str = "127.0.0.1", port: int = 0) -> ThreadedServer:
    """Start ``server`` on a fresh event loop in a daemon thread; returns once it is listening."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="simulator", daemon=True)
    thread.start()
    bound = asyncio.run_coroutine_threadsafe(server.start(host, port), loop).result(timeout=10)
    return ThreadedServer(server, bound, loop, thread)
