"""Ollama's native API: /api/chat and /api/generate (NDJSON streams), /api/tags, /api/ps, /api/version.

A stream is one JSON object per line per token, then a ``"done": true`` object with the durations (ns)
Ollama reports: ``total_duration``, ``load_duration`` (the model load this request waited for),
``prompt_eval_duration`` (the engine step that prefilled the prompt and produced the first token) and
``eval_duration`` (first token to last). A request with no prompt (no messages) only loads the model
and answers ``"done_reason": "load"`` once it is resident, as Ollama does.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from simulator.engine import QueueFullError, Sequence
from simulator.groundtruth import RequestTruth
from simulator.http import Request, Response
from simulator.runtime import Call, Exchange
from simulator.tokens import VOCAB_JSON, count_chat_tokens, count_tokens, generated_text, token_index

if TYPE_CHECKING:
    from simulator.server import SimServer

OLLAMA_VERSION = "0.12.6"
_NDJSON_TYPE = "application/x-ndjson"
_FOREVER = "2318-08-12T00:00:00Z"  # what Ollama shows for keep_alive < 0


def register(server: SimServer) -> None:
    server.add("POST", "/api/chat", lambda req, resp: _generate(server, req, resp, chat=True))
    server.add("POST", "/api/generate", lambda req, resp: _generate(server, req, resp, chat=False))
    server.add("GET", "/api/tags", lambda req, resp: resp.send_json(200, {"models": _model_entries(server)}))
    server.add("GET", "/api/ps", lambda req, resp: resp.send_json(200, {"models": _loaded_entries(server)}))
    server.add("GET", "/api/version", lambda req, resp: resp.send_json(200, {"version": OLLAMA_VERSION}))
    server.add("GET", "/", lambda req, resp: resp.send(200, b"Ollama is running", "text/plain; charset=utf-8"))
    server.add("HEAD", "/", lambda req, resp: resp.send(200, b"", "text/plain; charset=utf-8"))


def iso_ns(unix_ns: int) -> str:
    """RFC 3339 with nanoseconds, as Go marshals time.Time."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _details(server: SimServer) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    }


def _model_entries(server: SimServer) -> list[dict[str, Any]]:
    modified = datetime.fromtimestamp(server.started_unix_s, UTC).isoformat().replace("+00:00", "Z")
    return [
        {
            "name": f"{name}:latest",
            "model": f"{name}:latest",
            "modified_at": modified,
            "size": server.profile.model_size_bytes,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": _details(server),
        }
        for name in server.profile.models
    ]


def _loaded_entries(server: SimServer) -> list[dict[str, Any]]:
    runtime = server.runtime
    now_ns = time.monotonic_ns()
    if not runtime.loaded(now_ns):
        return []
    unload_ns = runtime.unloads_at_ns()
    if server.profile.keep_alive_s < 0:
        expires = _FOREVER
    else:
        at_ns = unload_ns if unload_ns is not None else now_ns + round(server.profile.keep_alive_s * 1e9)
        expires = iso_ns(time.time_ns() + at_ns - now_ns)
    entries = []
    for entry in _model_entries(server):
        del entry["modified_at"]
        entry.update(
            expires_at=expires,
            size_vram=int(server.profile.model_size_bytes * server.profile.gpu_fraction),
            context_length=server.profile.max_model_len,
        )
        entries.append(entry)
    return entries


def _num_predict(body: dict[str, Any]) -> int | None:
    """``options.num_predict``; -1 (or any value below 1) means no limit. ValueError if not an integer."""
    value = (body.get("options") or {}).get("num_predict")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("option num_predict must be an integer")
    return value if value > 0 else None


def _generate(server: SimServer, request: Request, response: Response, chat: bool) -> None:
    truth = server.open_truth(request)
    try:
        body = orjson.loads(request.body)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        if chat:
            messages = body.get("messages") or []
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise ValueError("messages must be a list of objects")
            prompt_tokens = count_chat_tokens(messages)
        else:
            prompt = body.get("prompt") or ""
            if not isinstance(prompt, str):
                raise ValueError("prompt must be a string")
            prompt_tokens = count_tokens(prompt)
        max_tokens = _num_predict(body)
        fault = server.pick_fault(request)
    except ValueError as exc:
        response.send_json(400, {"error": str(exc)})
        server.refuse(truth, 400)
        return
    requested = body.get("model")
    if not requested:
        response.send_json(400, {"error": "model is required"})
        server.refuse(truth, 400)
        return
    model = server.served_model(requested)
    if model is None:
        response.send_json(404, {"error": f'model "{requested}" not found, try pulling it first'})
        server.refuse(truth, 404)
        return
    truth.model = model
    http_fault = server.http_fault(fault)
    if http_fault is not None:
        response.send_json(http_fault.status, {"error": http_fault.message}, http_fault.headers)
        server.refuse(truth, http_fault.status)
        return
    if prompt_tokens == 0:
        _load_only(server, response, truth, requested, chat)
        return
    stream = body.get("stream", True) is not False
    exchange = OllamaExchange(Call(server, response, truth, stream, fault, chat, requested))
    try:
        seq = server.runtime.submit(prompt_tokens, max_tokens, False, exchange)
    except QueueFullError as exc:
        response.send_json(503, {"error": str(exc)})
        server.refuse(truth, 503)
        return
    exchange.begin(seq, _NDJSON_TYPE, {"X-Request-Id": str(truth.id)})


def _load_only(server: SimServer, response: Response, truth: RequestTruth, model: str, chat: bool) -> None:
    """Load the model and answer once it is resident, without generating."""
    wait_ns = server.runtime.preload(time.monotonic_ns())

    def answer() -> None:
        body: dict[str, Any] = {"model": model, "created_at": iso_ns(time.time_ns())}
        if chat:
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        body.update(done=True, done_reason="load")
        response.send_json(200, body, {"X-Request-Id": str(truth.id)})
        truth.finish_reason = "load"
        server.truth.close(truth, time.monotonic_ns())

    asyncio.get_running_loop().call_later(wait_ns / 1e9, answer)


class OllamaExchange(Exchange):
    """Renders /api/chat and /api/generate objects; ``created_at`` is the token's scheduled wall time."""

    ndjson = True

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        chat, model = call.chat, call.model
        anchor = call.server.truth.anchor
        self._unix_offset_ns = anchor["unix_ns"] - anchor["monotonic_ns"]
        self._pre = b'{"model":' + orjson.dumps(model) + b',"created_at":"'
        self._mid = b'","message":{"role":"assistant","content":' if chat else b'","response":'
        self._post = b'},"done":false}\n' if chat else b',"done":false}\n'

    def token_bytes(self, seq: Sequence, scheduled_ns: int) -> bytes:
        created = iso_ns(scheduled_ns + self._unix_offset_ns).encode()
        return self._pre + created + self._mid + VOCAB_JSON[token_index(seq.id, seq.emitted - 1)] + self._post

    def _final(self, seq: Sequence, text: str) -> dict[str, Any]:
        now_ns = time.monotonic_ns()
        admitted = seq.admitted_ns or seq.arrived_ns
        first = seq.first_token_ns or admitted
        body: dict[str, Any] = {"model": self.model, "created_at": iso_ns(now_ns + self._unix_offset_ns)}
        if self.chat:
            body["message"] = {"role": "assistant", "content": text}
        else:
            body["response"] = text
        body.update(done=True, done_reason=seq.finish_reason, total_duration=now_ns - seq.arrived_ns)
        if seq.load_wait_ns:  # Ollama omits a zero duration (omitempty)
            body["load_duration"] = seq.load_wait_ns
        body.update(
            prompt_eval_count=seq.prompt_tokens,
            prompt_eval_duration=first - admitted,
            eval_count=seq.emitted,
            eval_duration=(seq.finished_ns or first) - first,
        )
        return body

    def final_chunks(self, seq: Sequence) -> list[bytes]:
        return [orjson.dumps(self._final(seq, "")) + b"\n"]

    def whole_body(self, seq: Sequence) -> bytes:
        return orjson.dumps(self._final(seq, generated_text(seq.id, seq.emitted)))
