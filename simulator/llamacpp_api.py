"""llama-server's own routes: /health, /slots, and /metrics's refusal when it was started without ``--metrics``.

(Its /metrics itself and its OpenAI routes live elsewhere.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from simulator.engine import Sequence
from simulator.http import Request, Response

if TYPE_CHECKING:
    from simulator.server import SimServer


def register(server: SimServer, metrics: bool) -> None:
    server.add("GET", "/health", lambda req, resp: _health(server, req, resp))
    server.add("GET", "/slots", lambda req, resp: _slots(server, req, resp))
    if not metrics:
        server.add("GET", "/metrics", _metrics_disabled)


def _metrics_disabled(request: Request, response: Response) -> None:
    message = "This server does not support metrics endpoint. Start it with `--metrics`"
    response.send_json(501, {"error": {"code": 501, "message": message, "type": "not_supported_error"}})


def _health(server: SimServer, request: Request, response: Response) -> None:
    if server.runtime.loaded(time.monotonic_ns()):
        response.send_json(200, {"status": "ok"})
    else:
        error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        response.send_json(503, {"error": error})


def _slots(server: SimServer, request: Request, response: Response) -> None:
    """One entry per slot (of every replica, in order); busy slots show the sequence they decode."""
    profile = server.profile
    n_ctx = profile.kv_budget_tokens // profile.max_running
    slots: list[dict[str, Any]] = []
    for running in server.runtime.running():
        for slot in range(profile.max_running):
            seq = running[slot] if slot < len(running) else None
            slots.append(_slot(len(slots), n_ctx, seq))
    response.send_json(200, slots)


def _slot(slot_id: int, n_ctx: int, seq: Sequence | None) -> dict[str, Any]:
    return {
        "id": slot_id,
        "id_task": seq.id if seq else -1,
        "n_ctx": n_ctx,
        "is_processing": seq is not None,
        "params": {"n_predict": seq.target_tokens if seq else -1},
        "next_token": {
            "has_next_token": seq is not None,
            "n_remain": seq.target_tokens - seq.emitted if seq else -1,
            "n_decoded": seq.emitted if seq else 0,
        },
    }
