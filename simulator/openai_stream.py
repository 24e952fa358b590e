"""Responses of the OpenAI-compatible API, streamed or whole, in each flavour's own shapes.

:class:`OpenAIExchange` renders what :mod:`simulator.openai_api` admitted: one SSE chunk per token as
the engine emits it, then the flavour's final chunks, or one JSON body.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from simulator.engine import Sequence
from simulator.profiles import Flavor
from simulator.runtime import Call, Exchange
from simulator.tokens import VOCAB_JSON, generated_text, token_index
from simulator.vllm_shapes import (
    CHAT_CHOICE_EXTRAS,
    CHAT_CHUNK_CHOICE_EXTRAS,
    COMPLETION_CHOICE_EXTRAS,
    COMPLETION_CHUNK_CHOICE_EXTRAS,
    MESSAGE_EXTRAS,
    ROLE_CHUNK_EXTRAS,
    SYSTEM_FINGERPRINT,
    USAGE_DETAILS,
    whole_body_extras,
)

if TYPE_CHECKING:
    pass


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
      carries ``finish_reason`` and ``stop_reason``; a usage chunk when ``stream_options.include_usage``
      asks for it; ``system_fingerprint`` on the last chunk before ``[DONE]``; null extension fields
      (:mod:`simulator.vllm_shapes`).
    - llama-server (as captured from b6097): a role chunk with ``"content": null`` before the first
      token's, then a separate final chunk with an empty delta, ``finish_reason``, ``usage`` and
      ``timings``.
    - Ollama's compatibility layer: ``"role": "assistant"`` in every delta, a separate final chunk with
      empty content and ``finish_reason``, ``system_fingerprint: fp_ollama``, no ``logprobs``.

    The hot path only concatenates: each token chunk is pre-split around the token.
    """

    def __init__(self, call: Call, stream_options: dict[str, Any] | None) -> None:
        super().__init__(call)
        chat, stream, truth, model = call.chat, call.stream, call.truth, call.model
        self.flavor = flavor = call.server.profile.flavor
        self.head: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{truth.id}",
            "object": ("chat.completion" if chat else "text_completion") + (".chunk" if stream and chat else ""),
            "created": int(time.time()),
            "model": model,
        }
        if flavor in _FINGERPRINTS:
            self.head["system_fingerprint"] = _FINGERPRINTS[flavor]
        self.include_usage = bool(stream_options and stream_options.get("include_usage"))
        self._pre, self._post = self._chunk(self._choice(_TOKEN, None)).split(orjson.dumps(_TOKEN))
        self._role = b""
        if chat and flavor is Flavor.VLLM:
            role_choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            self._role = _event({**self.head, "choices": [{**role_choice, "finish_reason": None}], **ROLE_CHUNK_EXTRAS})
        elif chat and flavor is Flavor.LLAMACPP:
            role = {"role": "assistant", "content": None}
            self._role = self._chunk({"finish_reason": None, "index": 0, "delta": role})

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return _event({**self.head, "choices": [choice]})

    def _choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        """One streamed choice carrying ``text``, in the flavour's key set."""
        if self.flavor is Flavor.VLLM:
            if not self.chat:
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                        **COMPLETION_CHUNK_CHOICE_EXTRAS}  # fmt: skip
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
            if finish_reason is not None:
                choice["stop_reason"] = None
            return {**choice, **CHAT_CHUNK_CHOICE_EXTRAS}
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
            last = {**self.head, "choices": [self._choice(orjson.loads(word), seq.finish_reason)]}
            if not self.include_usage:  # the stream's last chunk before [DONE] carries the fingerprint
                last["system_fingerprint"] = SYSTEM_FINGERPRINT
            data = _event(last)
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
        if self.include_usage and self.flavor is Flavor.VLLM:
            usage = {**self.head, "choices": [], "usage": self._usage(seq), "system_fingerprint": SYSTEM_FINGERPRINT}
            chunks.append(_event(usage))
        elif self.include_usage and self.flavor is Flavor.OLLAMA:
            chunks.append(_event({**self.head, "choices": [], "usage": self._usage(seq)}))
        chunks.append(b"data: [DONE]\n\n")
        return chunks

    def whole_body(self, seq: Sequence) -> bytes:
        text = generated_text(seq.id, seq.emitted)
        if self.flavor is Flavor.VLLM:
            return orjson.dumps(self._vllm_whole_body(seq, text))
        choice: dict[str, Any] = {"index": 0, "finish_reason": seq.finish_reason}
        if self.flavor is not Flavor.OLLAMA:
            choice["logprobs"] = None
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        body: dict[str, Any] = {**self.head, "choices": [choice], "usage": self._usage(seq)}
        if self.flavor is Flavor.LLAMACPP:
            body["timings"] = llamacpp_timings(seq)
        return orjson.dumps(body)

    def _vllm_whole_body(self, seq: Sequence, text: str) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text, **MESSAGE_EXTRAS}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": seq.finish_reason,
                      **CHAT_CHOICE_EXTRAS}  # fmt: skip
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": seq.finish_reason,
                      **COMPLETION_CHOICE_EXTRAS}  # fmt: skip
        before, after = whole_body_extras(self.chat)
        usage = {**self._usage(seq), **USAGE_DETAILS}
        return {**self.head, "choices": [choice], **before, "usage": usage, **after}
