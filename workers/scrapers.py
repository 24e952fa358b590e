"""Runtime scrapers: what the serving runtime says about itself while it is under load.

- vLLM ``/metrics``: running and waiting requests, output tokens generated, KV-cache usage
  (``gpu_cache_usage_perc`` before v0.10, ``kv_cache_usage_perc`` after).
- llama.cpp ``/metrics`` (every ``llamacpp:`` series; the server needs ``--metrics``) and ``/slots``
  (per slot: busy or not, context size, tokens decoded).
- Ollama ``/api/ps``: per loaded model, its size and the part in GPU memory; ``size_vram < size``
  means layers were offloaded to the CPU.

Prometheus text is parsed by ``prometheus_client``'s parser. Each scrape becomes
:class:`~stampede.samples.RuntimeSampleRecord` values for the ``runtime_samples`` table.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stampede.samples import RuntimeKind, RuntimeSampleRecord

VLLM_METRICS = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
        # Counters (cumulative): the dashboard draws their rates. Preemptions mean the KV cache ran out.
        "vllm:generation_tokens_total",  # output tokens, checked against the client's count per step
        "vllm:num_preemptions_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_queries_total",  # the names before vLLM 0.10
        "vllm:gpu_prefix_cache_hits_total",
    }
)
LLAMACPP_PREFIX = "llamacpp:"

Value = tuple[str, dict[str, str], float]


def prometheus_values(text: str, wanted: Iterable[str] | None = None, prefix: str = "") -> list[Value]:
    """``(metric, labels, value)`` of every sample named in ``wanted`` (or, if None, starting with ``prefix``)."""
    names = frozenset(wanted) if wanted is not None else None
    values = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name in names) if names is not None else sample.name.startswith(prefix):
                values.append((sample.name, dict(sample.labels), float(sample.value)))
    return values


def llamacpp_slot_values(slots: list[dict[str, Any]]) -> list[Value]:
    """Per slot of llama.cpp's ``/slots``: whether it is busy, its context size, tokens decoded so far."""
    values: list[Value] = []
    for slot in slots:
        labels = {"slot": str(slot["id"])}
        values.append(("llamacpp_slot:is_processing", labels, float(bool(slot.get("is_processing")))))
        if "n_ctx" in slot:
            values.append(("llamacpp_slot:n_ctx", labels, float(slot["n_ctx"])))
        next_token = slot.get("next_token") or {}
        if isinstance(next_token, list):  # newer llama-server (as llama-cpp-python 0.3.36 vendors it) sends a list
            next_token = next_token[0] if next_token else {}
        decoded = next_token.get("n_decoded")
        if decoded is not None:
            values.append(("llamacpp_slot:n_decoded", labels, float(decoded)))
    return values


def ollama_ps_values(ps: dict[str, Any]) -> list[Value]:
    """Per model loaded in Ollama: its size, the part in GPU memory, and that part as a fraction."""
    values: list[Value] = []
    for model in ps.get("models", []):
        labels = {"model": str(model["name"])}
        size, vram = float(model["size"]), float(model.get("size_vram", 0))
        values.append(("ollama:size_bytes", labels, size))
        values.append(("ollama:size_vram_bytes", labels, vram))
        if size > 0:
            values.append(("ollama:vram_fraction", labels, vram / size))
    return values


def _get(url: str, timeout_s: float) -> bytes:
    """The body at ``url``; an error answer raises ``OSError`` quoting the runtime's own message."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"{url} answered HTTP {exc.code}: {_error_message(exc.read())}") from exc
    return body


def _error_message(body: bytes) -> str:
    """The message of an error body (``{"error": {"message": ...}}``, ``{"error": ...}``, ``{"detail": ...}``)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200]
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:200]
    return str(payload)[:200]


def scrape_values(kind: RuntimeKind | str, base_url: str, timeout_s: float = 5.0) -> list[Value]:
    """Read a runtime once; raises ``OSError`` (``URLError`` included) when it cannot be reached."""
    base = base_url.rstrip("/")
    match RuntimeKind(kind):
        case RuntimeKind.VLLM:
            return prometheus_values(_get(f"{base}/metrics", timeout_s).decode(), wanted=VLLM_METRICS)
        case RuntimeKind.LLAMACPP:
            metrics = prometheus_values(_get(f"{base}/metrics", timeout_s).decode(), prefix=LLAMACPP_PREFIX)
            return metrics + llamacpp_slot_values(json.loads(_get(f"{base}/slots", timeout_s)))
        case RuntimeKind.OLLAMA:
            return ollama_ps_values(json.loads(_get(f"{base}/api/ps", timeout_s)))


def scrape_once(
    kind: RuntimeKind | str,
    base_url: str,
    *,
    target: str | None = None,
    run_id: uuid.UUID | None = None,
    timeout_s: float = 5.0,
) -> list[RuntimeSampleRecord]:
    """One scrape of the runtime at ``base_url`` as records (``target`` defaults to the kind's name)."""
    sampled_at = datetime.now(UTC)
    host = socket.gethostname()
    label = target or RuntimeKind(kind).value
    return [
        RuntimeSampleRecord(
            run_id=run_id, target=label, host=host, sampled_at=sampled_at, metric=metric, labels=labels, value=value
        )
        for metric, labels, value in scrape_values(kind, base_url, timeout_s)
    ]
