"""The OpenAI-compatible API every flavour serves: /v1/chat/completions, /v1/completions, /v1/models.

Streams are SSE (``data: {json}\\n\\n``), one chunk per token in the flavour's own shape (see
:class:`OpenAIExchange`), then ``data: [DONE]``. Error bodies and extras follow the flavour: vLLM,
Ollama's compatibility layer, or llama-server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from simulator.engine import ContextLengthError, QueueFullError, Sequence, prefix_block_ids
from simulator.groundtruth import RequestTruth
from simulator.http import Request, Response
from simulator.profiles import Flavor
from simulator.runtime import Exchange
from simulator.tokens import VOCAB_JSON, chat_tokens, generated_text, token_index, tokenize

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
_LLAMACPP_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 503: "unavailable_error"}
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


def _prompt_tokens(body: dict[str, Any], chat: bool) -> list[str]:
    """Prompt tokens of a chat's ``messages`` or a completion's ``prompt``; ValueError if malformed."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError("messages must be a non-empty list of objects")
        return chat_tokens(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "".join(prompt)
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a string or a list of strings")
    return tokenize(prompt)


def _complete(server: SimServer, request: Request, response: Response, chat: bool) -> None:
    truth = server.open_truth(request)
    if not _authorized(server, request, response):
        server.refuse(truth, 401)
        return
    try:
        body = orjson.loads(request.body)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        prompt = _prompt_tokens(body, chat)
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
    options = body.get("stream_options")
    exchange = OpenAIExchange(
        server, response, truth, stream, fault, chat, model, options if isinstance(options, dict) else None
    )
    try:
        blocks = prefix_block_ids(prompt) if server.profile.prefix_caching else ()
        seq = server.runtime.submit(len(prompt), max_tokens, bool(body.get("ignore_eos")), exchange, blocks)
    except ContextLengthError as exc:
        _refuse_context(server, response, exc)
        server.refuse(truth, 400)
        return
    except QueueFullError as exc:
        send_error(server, response, 503, str(exc))
        server.refuse(truth, 503)
        return
    exchange.begin(seq, _SSE_TYPE, {"X-Request-Id": str(truth.id), "Cache-Control": "no-cache"})


def _refuse_context(server: SimServer, response: Response, exc: ContextLengthError) -> None:
    """The 400 a request that does not fit the context gets, worded as the flavour's server words it."""
    limit, prompt = exc.limit, exc.prompt_tokens
    if server.profile.flavor is Flavor.LLAMACPP:
        error = {
            "code": 400,
            "message": f"request ({prompt} tokens) exceeds the available context size ({limit} tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": prompt,
            "n_ctx": limit,
        }
        response.send_json(400, {"error": error})
    elif exc.max_tokens is None or prompt >= limit:
        message = (
            f"This model's maximum context length is {limit} tokens. However, your request has {prompt} input "
            "tokens. Please reduce the length of the input messages."
        )
        send_error(server, response, 400, message)
    else:
        message = (
            f"'max_tokens' or 'max_completion_tokens' is too large: {exc.max_tokens}. This model's maximum context "
            f"length is {limit} tokens and your request has {prompt} input tokens "
            f"({exc.max_tokens} > {limit} - {prompt})."
        )
        send_error(server, response, 400, message)


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


_TOKEN = "\x00token\x00"
"""Stands for the token in a rendered chunk, which is then split around it."""
_FINGERPRINTS = {Flavor.LLAMACPP: "b6097-9515c613", Flavor.OLLAMA: "fp_ollama"}


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class OpenAIExchange(Exchange):
    """Renders chat.completion(.chunk) or text_completion responses in the flavour's own chunk shapes.

    - vLLM: a role-only chunk (``"content": ""``) just before the first token's; the last token's chunk
      carries ``finish_reason`` and ``stop_reason``; a usage chunk when ``stream_options`` asks for it
      (``include_usage`` defaults to true once ``stream_options`` is given).
    - llama-server (as captured from b6097): a role chunk with ``"content": null`` before the first
      token's, then a separate final chunk with an empty delta, ``finish_reason``, ``usage`` and
      ``timings``.
    - Ollama's compatibility layer: ``"role": "assistant"`` in every delta, a separate final chunk with
      empty content and ``finish_reason``, ``system_fingerprint: fp_ollama``, no ``logprobs``.

    The hot path only concatenates: each token chunk is pre-split around the token.
    """

    def __init__(
        self,
        server: SimServer,
        response: Response,
        truth: RequestTruth,
        stream: bool,
        fault: FaultKind | None,
        chat: bool,
        model: str,
        stream_options: dict[str, Any] | None,
    ) -> None:
        super().__init__(server, response, truth, stream, fault)
        self.chat = chat
        self.flavor = flavor = server.profile.flavor
        self.head: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{truth.id}",
            "object": ("chat.completion" if chat else "text_completion") + (".chunk" if stream and chat else ""),
            "created": int(time.time()),
            "model": model,
        }
        if flavor in _FINGERPRINTS:
            self.head["system_fingerprint"] = _FINGERPRINTS[flavor]
        if flavor is Flavor.VLLM:
            self.include_usage = stream_options is not None and stream_options.get("include_usage", True) is not False
        else:
            self.include_usage = bool(stream_options and stream_options.get("include_usage"))
        self._pre, self._post = self._chunk(self._choice(_TOKEN, None)).split(orjson.dumps(_TOKEN))
        self._role = b""
        if chat and flavor is Flavor.VLLM:
            self._role = self._chunk(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            )
        elif chat and flavor is Flavor.LLAMACPP:
            role = {"role": "assistant", "content": None}
            self._role = self._chunk({"finish_reason": None, "index": 0, "delta": role})

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return _event({**self.head, "choices": [choice]})

    def _choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        """One streamed choice carrying ``text``, in the flavour's key set."""
        if self.flavor is Flavor.VLLM:
            body: dict[str, Any] = {"delta": {"content": text}} if self.chat else {"text": text}
            choice = {"index": 0, **body, "logprobs": None, "finish_reason": finish_reason}
            if finish_reason is not None or not self.chat:
                choice["stop_reason"] = None
            return choice
        if self.flavor is Flavor.LLAMACPP:
            if self.chat:
                return {"finish_reason": finish_reason, "index": 0, "delta": {"content": text} if text else {}}
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self.chat:
            return {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        return {"text": text, "index": 0, "finish_reason": finish_reason}

    def token_bytes(self, seq: Sequence, scheduled_ns: int) -> bytes:
        word = VOCAB_JSON[token_index(seq.id, seq.emitted - 1)]
        if seq.finished_ns is not None and self.flavor is Flavor.VLLM:
            data = self._chunk(self._choice(orjson.loads(word), seq.finish_reason))
        else:
            data = self._pre + word + self._post
        return self._role + data if seq.emitted == 1 else data

    def _usage(self, seq: Sequence) -> dict[str, int]:
        return {
            "prompt_tokens": seq.prompt_tokens,
            "completion_tokens": seq.emitted,
            "total_tokens": seq.prompt_tokens + seq.emitted,
        }

    def final_chunks(self, seq: Sequence) -> list[bytes]:
        chunks = []
        if self.flavor is Flavor.LLAMACPP:
            final = {**self.head, "choices": [self._choice("", seq.finish_reason)], "usage": self._usage(seq)}
            chunks.append(_event({**final, "timings": llamacpp_timings(seq)}))
        elif self.flavor is Flavor.OLLAMA:
            chunks.append(self._chunk(self._choice("", seq.finish_reason)))
        if self.include_usage and self.flavor is not Flavor.LLAMACPP:
            chunks.append(_event({**self.head, "choices": [], "usage": self._usage(seq)}))
        chunks.append(b"data: [DONE]\n\n")
        return chunks

    def whole_body(self, seq: Sequence) -> bytes:
        text = generated_text(seq.id, seq.emitted)
        choice: dict[str, Any] = {"index": 0, "finish_reason": seq.finish_reason}
        if self.flavor is not Flavor.OLLAMA:
            choice["logprobs"] = None
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if self.flavor is Flavor.VLLM:
            choice["stop_reason"] = None
        body: dict[str, Any] = {**self.head, "choices": [choice], "usage": self._usage(seq)}
        if self.flavor is Flavor.LLAMACPP:
            body["timings"] = llamacpp_timings(seq)
        return orjson.dumps(body)
