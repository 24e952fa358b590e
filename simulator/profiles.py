"""Runtime profiles: the numbers that make the simulator behave like Ollama, vLLM or llama.cpp.

A profile starts from a built-in default, is overridden by a profile file (JSON or TOML, keys named as
the :class:`Profile` fields, faults under ``[faults]``), then by command-line flags.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from simulator.faults import FaultPlan


class Flavor(str, Enum):
    """Which real runtime's wire protocol and behaviour a profile imitates."""

    OLLAMA = "ollama"
    VLLM = "vllm"
    LLAMACPP = "llamacpp"


@dataclass(frozen=True, slots=True)
class Profile:
    """Every tunable of the load model and the server; times in ms or s as named, sizes in tokens/bytes."""

    flavor: Flavor
    max_running: int
    """Sequences decoded together: OLLAMA_NUM_PARALLEL, vLLM's max_num_seqs, llama.cpp's --parallel."""
    step_base_ms: float
    """Fixed cost of one decode step (weights read once per step, whatever the batch)."""
    step_per_seq_ms: float
    """Extra step cost per running sequence; per-stream speed falls as the batch grows."""
    prefill_tokens_per_s: float
    """Prompt processing rate; a newly admitted sequence's prefill lengthens the step it joins."""
    kv_budget_tokens: int
    """KV cache size; a request reserves prompt + output tokens and waits in the queue while it is full
    (with ``preemption``, it holds what it has computed, and grows a token per step)."""
    max_model_len: int
    """Context length: prompt + output tokens of one request may not exceed it."""
    mean_output_tokens: float
    """Mean of the EOS-like (geometric) output length drawn when a request sets no max tokens."""
    replicas: int = 1
    """Independent engines (GPUs, data-parallel ranks, server instances) behind a least-loaded balancer;
    each has its own ``max_running`` slots, KV budget and model residency."""
    max_queue: int | None = None
    """Requests allowed to wait; past it new ones are refused (Ollama's OLLAMA_MAX_QUEUE). None: unbounded."""
    load_ms: float = 0.0
    """Model load time paid by the first request after the model was unloaded."""
    keep_alive_s: float = -1.0
    """Idle seconds before the model unloads; negative keeps it loaded forever."""
    model_size_bytes: int = 4_920_000_000
    """Reported model size (Ollama /api/ps and /api/tags)."""
    gpu_fraction: float = 1.0
    """Share of the model in VRAM; below 1.0 Ollama's /api/ps shows a partial CPU offload."""
    models: tuple[str, ...] = ("stampede-sim",)
    """Served model names; the first is the default."""
    preemption: bool = False
    """vLLM's KV allocation: a request is admitted when its prompt fits and takes cache as it generates;
    when a step's tokens do not fit, the last admitted running request is preempted (its cache freed,
    recomputed when it is admitted again). Otherwise prompt and output are reserved at admission."""
    prefix_caching: bool = False
    """vLLM's automatic prefix caching: a prompt's leading full blocks of 16 tokens that an earlier
    prompt left in the KV cache are not computed again (prefill shortens; counted in its /metrics)."""
    seed: int = 0
    """Seeds output lengths and faults."""
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        if self.max_running < 1 or self.replicas < 1:
            raise ValueError("max_running and replicas must be at least 1")
        if self.kv_budget_tokens < self.max_model_len:
            raise ValueError("kv_budget_tokens must hold at least one max_model_len request")
        if self.step_base_ms <= 0 or self.step_per_seq_ms < 0 or self.prefill_tokens_per_s <= 0:
            raise ValueError("step costs must be positive and the prefill rate above zero")
        if not self.models:
            raise ValueError("at least one model name is needed")
        if self.preemption and self.flavor is not Flavor.VLLM:
            raise ValueError("preemption is vLLM's scheduler: only the vllm profile has it")


DEFAULTS: dict[Flavor, Profile] = {
    # One consumer GPU, an 8B Q4 model: ~90 tok/s alone, ~50 tok/s per stream with 4 slots busy.
    Flavor.OLLAMA: Profile(
        flavor=Flavor.OLLAMA,
        max_running=4,
        step_base_ms=8.0,
        step_per_seq_ms=3.0,
        prefill_tokens_per_s=2_000.0,
        kv_budget_tokens=4 * 8_192,
        max_model_len=8_192,
        mean_output_tokens=200.0,
        max_queue=512,
        load_ms=1_500.0,
        keep_alive_s=300.0,
    ),
    # One datacenter GPU with continuous batching: ~80 tok/s alone, still ~40 tok/s per stream at 256.
    Flavor.VLLM: Profile(
        flavor=Flavor.VLLM,
        max_running=256,
        step_base_ms=12.0,
        step_per_seq_ms=0.05,
        prefill_tokens_per_s=12_000.0,
        kv_budget_tokens=131_072,
        max_model_len=8_192,
        mean_output_tokens=200.0,
        preemption=True,
        prefix_caching=True,  # on by default since vLLM V1
    ),
    # llama-server with 4 slots sharing a 16k context.
    Flavor.LLAMACPP: Profile(
        flavor=Flavor.LLAMACPP,
        max_running=4,
        step_base_ms=10.0,
        step_per_seq_ms=2.5,
        prefill_tokens_per_s=1_500.0,
        kv_budget_tokens=16_384,
        max_model_len=4_096,
        mean_output_tokens=200.0,
    ),
}


def read_profile_file(path: Path) -> dict[str, Any]:
    """Overrides from a ``.json`` or ``.toml`` file, as a dict keyed by :class:`Profile` field names."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile file holds one object/table")
    return data


def build_profile(flavor: Flavor, *layers: dict[str, Any]) -> Profile:
    """The default profile of ``flavor`` with each layer of overrides applied in order (later wins).

    Unknown keys are errors, so a typo in a profile file never goes unnoticed; ``faults`` layers merge
    field by field instead of replacing the whole plan.
    """
    profile = DEFAULTS[flavor]
    names = {f.name for f in dataclasses.fields(Profile)} - {"flavor"}
    for layer in layers:
        unknown = set(layer) - names
        if unknown:
            raise ValueError(f"unknown profile keys: {', '.join(sorted(unknown))}")
        changes = dict(layer)
        if "faults" in changes:
            changes["faults"] = profile.faults.merged(changes["faults"])
        if "models" in changes:
            changes["models"] = tuple(changes["models"])
        profile = dataclasses.replace(profile, **changes)
    return profile
