"""Comparing two servers' answers field by field: JSON shapes flattened to paths, and /metrics series.

A JSON value flattens to ``{path: type}`` (``.choices[].delta.content: str``), so a difference names
its field. Values are compared only at paths that are protocol constants (``object``, roles, finish
reasons, error types), never at ones that vary by nature (ids, times, generated text).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

_TYPES = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}


def flatten(value: Any, path: str = "") -> dict[str, tuple[str, Any]]:
    """``{path: (JSON type, value)}`` of every node; list items share the path ``[]`` (the last one's value)."""
    if isinstance(value, dict):
        out: dict[str, tuple[str, Any]] = {path or ".": ("object", None)}
        for key, item in value.items():
            out.update(flatten(item, f"{path}.{key}"))
        return out
    if isinstance(value, list):
        out = {path or ".": ("array", None)}
        for item in value:
            out.update(flatten(item, f"{path}[]"))
        return out
    return {path or ".": (_TYPES[type(value)], value)}


def differences(what: str, real: Any, simulated: Any, values_at: frozenset[str] = frozenset()) -> list[str]:
    """Each field whose presence or type differs, and each field in ``values_at`` whose value differs."""
    a, b = flatten(real), flatten(simulated)
    found = []
    for path in sorted(a.keys() | b.keys()):
        real_type = a[path][0] if path in a else "missing"
        sim_type = b[path][0] if path in b else "missing"
        if real_type != sim_type:
            found.append(f"{what} {path}: vLLM has {real_type}, the simulator {sim_type}")
        elif path in values_at and a[path][1] != b[path][1]:
            found.append(f"{what} {path}: vLLM sends {a[path][1]!r}, the simulator {b[path][1]!r}")
    return found


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[Any]:
        """An SSE body's JSON payloads, ``[DONE]`` as the string itself."""
        payloads = [line.removeprefix("data: ") for line in self.body.decode().split("\n\n") if line.strip()]
        return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def call(url: str, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> Reply:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def chunk_kind(event: Any) -> str:
    """What a chat or completion stream's chunk is for: role, content, finish, usage, done."""
    if event == "[DONE]":
        return "done"
    if not event["choices"]:
        return "usage"
    choice = event["choices"][0]
    if choice["finish_reason"] is not None:
        return "finish"
    return "role" if "role" in choice.get("delta", {}) else "content"


@dataclass(frozen=True)
class Series:
    """What a /metrics family promises per sample name: its type, label names, and histogram bounds."""

    family_type: str
    labels: frozenset[str]
    bounds: frozenset[str]


def series(text: str, prefix: str = "vllm:") -> dict[str, Series]:
    """Sample names (``_total``, ``_bucket``... included) under ``prefix``; histogram bounds on ``_bucket``."""
    found: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(prefix):
                continue
            labels = frozenset(k for k in sample.labels if k != "le")
            bound = frozenset({sample.labels["le"]}) if "le" in sample.labels else frozenset()
            seen = found.get(sample.name)
            if seen is not None:
                labels, bound = labels | seen.labels, bound | seen.bounds
            found[sample.name] = Series(family.type, labels, bound)
    return found


def label_values(text: str, name: str, label: str) -> set[str]:
    return {
        s.labels[label]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and label in s.labels
    }
