"""The OpenAI-compatible API every flavour serves: /v1/chat/completions, /v1/completions, /v1/models.

Streams are SSE (``data: {json}\\n\\n``), one chunk per token, the last token's chunk carrying
``finish_reason``; then a usage chunk with empty ``choices`` when ``stream_options.include_usage`` is set
(llama.cpp always sends one, with its ``timings``), then ``data: [DONE]``. Error bodies and extras follow
the flavour: vLLM, Ollama's compatibility layer, or llama-server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from simulator.engine import ContextLengthError, QueueFullError, Sequence
from simulator.groundtruth import RequestTruth
from simulator.http import Request, Response
from simulator.profiles import Flavor
from simulator.runtime import Exchange
from simulator.tokens import VOCAB_JSON, count_chat_tokens, count_tokens, generated_text, token_index

if TYPE_CHECKING:
    from simulator.faults import FaultKind
    from simulator.server import SimServer

_SSE_TYPE = "text/event-stream; charset=utf-8"
_VLLM_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    429: "RateLimitError",
    503: "ServiceUnavailableError",
}
_LLAMACPP_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    503: "unavailable_error",
}
_OLLAMA_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def register(server: SimServer) -> None:
    server.add("POST", "/v1/chat/completions", lambda req, resp: _complete(server, req, resp, chat=True))
    server.add("POST", "/v1/completions", lambda req, resp: _complete(server, req, resp, chat=False))
    server.add("GET", "/v1/models", lambda req, resp: _models(server, req, resp))


def send_error(
    server: SimServer, response: Response, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """An error answer in the body shape the imitated server uses on its OpenAI-compatible routes."""
    flavor = server.profile.flavor
    if flavor is Flavor.VLLM:
        error: dict[str, Any] = {
            "message": message,
            "type": _VLLM_ERROR_TYPES.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
    elif flavor is Flavor.LLAMACPP:
        error = {"code": status, "message": message, "type": _LLAMACPP_ERROR_TYPES.get(status, "server_error")}
    else:
        error = {"message": message, "type": _OLLAMA_ERROR_TYPES.get(status, "api_error"), "param": None, "code": None}
    response.send_json(status, {"error": error}, headers)


def _authorized(server: SimServer, request: Request, response: Response) -> bool:
    if server.api_key is None or request.headers.get("authorization") == f"Bearer {server.api_key}":
        return True
    if server.profile.flavor is Flavor.LLAMACPP:
        send_error(server, response, 401, "Invalid API Key")
    else:
        response.send_json(401, {"error": "Unauthorized"})
    return False


def _models(server: SimServer, request: Request, response: Response) -> None:
    if not _authorized(server, request, response):
        return
    flavor = server.profile.flavor
    owner = {Flavor.VLLM: "vllm", Flavor.OLLAMA: "library", Flavor.LLAMACPP: "llamacpp"}[flavor]
    data = []
    for name in server.profile.models:
        entry: dict[str, Any] = {
            "id": f"{name}:latest" if flavor is Flavor.OLLAMA else name,
            "object": "model",
            "created": server.started_unix_s,
            "owned_by": owner,
        }
        if flavor is Flavor.VLLM:
            entry.update(root=name, parent=None, max_model_len=server.profile.max_model_len)
        data.append(entry)
    response.send_json(200, {"object": "list", "data": data})


def _max_tokens(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens`` or ``max_tokens``; ValueError if not a positive integer."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("max_tokens must be a positive integer")
    return value


def _prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Prompt tokens of a chat's ``messages`` or a completion's ``prompt``; ValueError if malformed."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError("messages must be a non-empty list of objects")
        return count_chat_tokens(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "".join(prompt)
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a string or a list of strings")
    return count_tokens(prompt)


def _complete(server: SimServer, request: Request, response: Response, chat: bool) -> None:
    truth = server.open_truth(request)
    if not _authorized(server, request, response):
        server.refuse(truth, 401)
        return
    try:
        body = orjson.loads(request.body)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        prompt_tokens = _prompt_tokens(body, chat)
        max_tokens = _max_tokens(body)
        fault = server.pick_fault(request)
    except ValueError as exc:
        send_error(server, response, 400, str(exc))
        server.refuse(truth, 400)
        return
    model = server.served_model(body.get("model"))
    if model is None:
        send_error(server, response, 404, _unknown_model_message(server, body.get("model")))
        server.refuse(truth, 404)
        return
    truth.model = model
    http_fault = server.http_fault(fault)
    if http_fault is not None:
        send_error(server, response, http_fault.status, http_fault.message, http_fault.headers)
        server.refuse(truth, http_fault.status)
        return
    stream = bool(body.get("stream"))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    exchange = OpenAIExchange(server, response, truth, stream, fault, chat, model, include_usage)
    try:
        seq = server.runtime.submit(prompt_tokens, max_tokens, bool(body.get("ignore_eos")), exchange)
    except ContextLengthError as exc:
        send_error(server, response, 400, str(exc))
        server.refuse(truth, 400)
        return
    except QueueFullError as exc:
        send_error(server, response, 503, str(exc))
        server.refuse(truth, 503)
        return
    exchange.begin(seq, _SSE_TYPE, {"X-Request-Id": str(truth.id), "Cache-Control": "no-cache"})


def _unknown_model_message(server: SimServer, requested: object) -> str:
    if server.profile.flavor is Flavor.OLLAMA:
        return f'model "{requested}" not found, try pulling it first'
    return f"The model `{requested}` does not exist."


def llamacpp_timings(seq: Sequence) -> dict[str, float]:
    """llama-server's per-response ``timings`` block, from the engine's schedule for this sequence."""
    admitted = seq.admitted_ns or seq.arrived_ns
    first = seq.first_token_ns or admitted
    finished = seq.finished_ns or first
    prompt_ms = (first - admitted) / 1e6
    predicted_ms = (finished - first) / 1e6
    return {
        "prompt_n": seq.prompt_tokens,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / seq.prompt_tokens if seq.prompt_tokens else 0.0,
        "prompt_per_second": seq.prompt_tokens * 1e3 / prompt_ms if prompt_ms else 0.0,
        "predicted_n": seq.emitted,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / seq.emitted if seq.emitted else 0.0,
        "predicted_per_second": seq.emitted * 1e3 / predicted_ms if predicted_ms else 0.0,
    }


class OpenAIExchange(Exchange):
    """Renders chat.completion(.chunk) or text_completion responses; chunk bytes are pre-split around the token."""

    def __init__(
        self,
        server: SimServer,
        response: Response,
        truth: RequestTruth,
        stream: bool,
        fault: FaultKind | None,
        chat: bool,
        model: str,
        include_usage: bool,
    ) -> None:
        super().__init__(server, response, truth, stream, fault)
        self.chat = chat
        self.include_usage = include_usage
        self.llamacpp = server.profile.flavor is Flavor.LLAMACPP
        self.head: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{truth.id}",
            "object": ("chat.completion" if chat else "text_completion") + (".chunk" if stream and chat else ""),
            "created": int(time.time()),
            "model": model,
        }
        opening = b"data: " + orjson.dumps(self.head)[:-1] + b',"choices":[{"index":0,'
        self._pre = opening + (b'"delta":{"content":' if chat else b'"text":')
        self._pre_first = opening + b'"delta":{"role":"assistant","content":' if chat else self._pre
        close = b"}" if chat else b""
        self._post = close + b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._delta_end = close

    def token_bytes(self, seq: Sequence, scheduled_ns: int) -> bytes:
        word = VOCAB_JSON[token_index(seq.id, seq.emitted - 1)]
        if seq.finished_ns is not None:
            reason = b',"logprobs":null,"finish_reason":"%b"}]}\n\n' % seq.finish_reason.encode()
            return (self._pre_first if seq.emitted == 1 else self._pre) + word + self._delta_end + reason
        if seq.emitted == 1:
            return self._pre_first + word + self._post
        return self._pre + word + self._post

    def _usage(self, seq: Sequence) -> dict[str, int]:
        return {
            "prompt_tokens": seq.prompt_tokens,
            "completion_tokens": seq.emitted,
            "total_tokens": seq.prompt_tokens + seq.emitted,
        }

    def final_chunks(self, seq: Sequence) -> list[bytes]:
        chunks = []
        if self.include_usage or self.llamacpp:
            final: dict[str, Any] = {**self.head, "choices": [], "usage": self._usage(seq)}
            if self.llamacpp:
                final["timings"] = llamacpp_timings(seq)
            chunks.append(b"data: " + orjson.dumps(final) + b"\n\n")
        chunks.append(b"data: [DONE]\n\n")
        return chunks

    def whole_body(self, seq: Sequence) -> bytes:
        text = generated_text(seq.id, seq.emitted)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": seq.finish_reason}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        body: dict[str, Any] = {**self.head, "choices": [choice], "usage": self._usage(seq)}
        if self.llamacpp:
            body["timings"] = llamacpp_timings(seq)
        return orjson.dumps(body)
