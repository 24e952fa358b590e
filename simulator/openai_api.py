"""The OpenAI-compatible API every flavour serves: /v1/chat/completions, /v1/completions, /v1/models.

This module admits or refuses a request; :mod:`simulator.openai_stream` renders the answer. Streams
are SSE (``data: {json}\\n\\n``), one chunk per token in the flavour's own shape, then ``data: [DONE]``.
Error bodies and extras follow the flavour: vLLM, Ollama's compatibility layer, or llama-server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from simulator.engine import ContextLengthError, QueueFullError
from simulator.http import Request, Response
from simulator.openai_stream import OpenAIExchange
from simulator.prefix_cache import prefix_block_ids
from simulator.profiles import Flavor
from simulator.runtime import Call
from simulator.tokens import chat_tokens, tokenize
from simulator.vllm_shapes import context_error, max_tokens_error, model_permission, unknown_model_message

if TYPE_CHECKING:
    from simulator.server import SimServer

_SSE_TYPE = "text/event-stream; charset=utf-8"
_VLLM_COMPLETION_MAX_TOKENS = 16
"""The legacy completions API's default ``max_tokens``, which vLLM keeps (chat has none)."""
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


class BadRequest(ValueError):
    """A request the server refuses with 400; ``param`` names the field at fault where vLLM names it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def send_error(
    server: SimServer,
    response: Response,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> None:
    """An error answer in the body shape the imitated server uses on its OpenAI-compatible routes."""
    flavor = server.profile.flavor
    if flavor is Flavor.VLLM:
        error: dict[str, Any] = {
            "message": message,
            "type": _VLLM_ERROR_TYPES.get(status, "InternalServerError"),
            "param": param,
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
            entry.update(
                root=name,
                parent=None,
                max_model_len=server.profile.max_model_len,
                permission=[model_permission(server.started_unix_s)],
            )
        data.append(entry)
    response.send_json(200, {"object": "list", "data": data})


def _max_tokens(body: dict[str, Any], flavor: Flavor) -> int | None:
    """``max_completion_tokens`` or ``max_tokens``; BadRequest if not a positive integer."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("max_tokens must be a positive integer")
    if value < 1:
        if flavor is Flavor.VLLM:
            raise BadRequest(max_tokens_error(value), "max_tokens")
        raise BadRequest("max_tokens must be a positive integer")
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
        max_tokens = _max_tokens(body, server.profile.flavor)
        if max_tokens is None and not chat and server.profile.flavor is Flavor.VLLM:
            max_tokens = _VLLM_COMPLETION_MAX_TOKENS
        fault = server.pick_fault(request)
    except ValueError as exc:
        send_error(server, response, 400, str(exc), param=exc.param if isinstance(exc, BadRequest) else None)
        server.refuse(truth, 400)
        return
    model = server.served_model(body.get("model"))
    if model is None:
        send_error(server, response, 404, _unknown_model_message(server, body.get("model")), param="model")
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
    call = Call(server, response, truth, stream, fault, chat, model)
    exchange = OpenAIExchange(call, options if isinstance(options, dict) else None)
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
    else:
        message, param = context_error(prompt, exc.max_tokens, limit)
        send_error(server, response, 400, message, param=param)


def _unknown_model_message(server: SimServer, requested: object) -> str:
    if server.profile.flavor is Flavor.OLLAMA:
        return f'model "{requested}" not found, try pulling it first'
    return unknown_model_message(requested, server.profile.models)
