"""A sweep described in a file (TOML or JSON), so it can be repeated exactly and scheduled.

    name = "ollama vs vllm, 1B"
    steps = [1, 2, 4, 8, 16, 32]
    step_duration_s = 30
    warmup_s = 10
    max_tokens = 128

    [slo]
    ttft_ms = 500
    tpot_ms = 50

    [[targets]]
    name = "ollama"
    url = "http://127.0.0.1:11434"
    api = "ollama_chat"
    model = "llama3.2:1b"

API keys never go in the file: they come from STAMPEDE_API_KEY.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from stampede.metrics import MIN_COMPLETIONS
from stampede.records import Api
from stampede.slo import Slo


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Spec):
    """A runtime to load."""

    name: str = Field(min_length=1, description="Label in reports; unique within the file.")
    url: str = Field(description="Base URL, without credentials.")
    api: Api = Field(default=Api.OPENAI_CHAT, description="ollama_chat or openai_chat.")
    model: str = Field(description="Model name to request.")
    runtime: Literal["vllm", "llamacpp", "ollama", "none"] | None = Field(
        default=None,
        description="Runtime whose own statistics to sample during the run (vLLM or llama.cpp /metrics, "
        "Ollama /api/ps); by default Ollama for its native API, none otherwise.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"needs its scheme, e.g. http://{url}")
        if not urlsplit(url).hostname:
            raise ValueError(f"names no host: {url!r}")
        return url

    @property
    def scraped_runtime(self) -> str | None:
        """The runtime kind to scrape, if any."""
        if self.runtime is None:
            return "ollama" if self.api is Api.OLLAMA_CHAT else None
        return None if self.runtime == "none" else self.runtime


class RegressionSpec(_Spec):
    """How far a run may fall behind its baseline before it is marked a regression."""

    throughput_drop_pct: float = Field(default=10.0, gt=0, description="Output tokens/s drop, percent.")
    latency_rise_pct: float = Field(default=20.0, gt=0, description="TTFT/ITL/E2E p99 rise, percent.")


PROMPT_SET_KINDS = ("synthetic", "jsonl", "sharegpt")
"""Prompt sets that take an argument after ``:`` (``seeds`` takes none); loadgen/prompts.py reads them."""


OPEN_LOOP_IN_FLIGHT = 256
"""Requests in flight an open-loop sweep allows when ``steps`` does not say (a request due while all
are busy waits, and its send delay is recorded)."""


class SweepFile(_Spec):
    """Everything a sweep needs besides secrets."""

    name: str = Field(min_length=1)
    targets: list[TargetSpec] = Field(min_length=1)
    steps: list[int] = Field(default=[1, 2, 4, 8, 16, 32], min_length=1, description="Users per step.")
    rates: list[float] = Field(default=[], description="Open loop: requests/s per step; steps[0] caps in flight.")
    step_duration_s: float | Literal["auto"] = Field(
        default=30.0, description="Seconds each step lasts, or auto: until its window holds enough completions."
    )
    max_step_duration_s: float = Field(default=600.0, gt=0, description="Longest an auto step lasts.")
    warmup_s: float = Field(default=10.0, ge=0, validate_default=True)  # checked against the step even when left out
    min_completions: int = Field(
        default=MIN_COMPLETIONS, ge=1, description="Completions a step's window needs, else it is marked too short."
    )
    max_tokens: int = Field(default=128, ge=1)
    prompt_set: str = "seeds"
    ignore_eos: bool = False
    arrival: str = Field(default="poisson", pattern="^(constant|poisson|gamma)$")
    burstiness: float = Field(default=1.0, gt=0)
    seed: int = 0
    processes: int = Field(default=1, ge=1, description="Locust processes.")
    slo: Slo = Slo()
    regression: RegressionSpec = RegressionSpec()

    @model_validator(mode="before")
    @classmethod
    def _open_loop_cap(cls, data: Any) -> Any:
        """With rates and no steps, the cap on requests in flight is :data:`OPEN_LOOP_IN_FLIGHT`, not the
        first step of the closed-loop ladder (1 user, which would make the open loop a closed one)."""
        if isinstance(data, dict) and data.get("rates") and "steps" not in data:
            return {**data, "steps": [OPEN_LOOP_IN_FLIGHT]}
        return data

    @field_validator("steps")
    @classmethod
    def _positive_steps(cls, steps: list[int]) -> list[int]:
        if min(steps) < 1:
            raise ValueError("every step needs at least one user")
        return steps

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, rates: list[float]) -> list[float]:
        if rates and min(rates) <= 0:
            raise ValueError("every rate must be > 0")
        return rates

    @field_validator("prompt_set")
    @classmethod
    def _known_prompt_set(cls, spec: str) -> str:
        kind, _, arg = spec.partition(":")
        if not (spec == "seeds" or (kind in PROMPT_SET_KINDS and arg)):
            raise ValueError(f"{spec!r} is not seeds, synthetic:..., jsonl:PATH or sharegpt:PATH")
        return spec

    @field_validator("step_duration_s", mode="before")
    @classmethod
    def _seconds_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be seconds or auto, got {value!r}") from None
        if seconds <= 0:
            raise ValueError("must be > 0 seconds, or auto")
        return seconds

    @property
    def longest_step_s(self) -> float:
        """How long a step may last: its duration, or the auto maximum."""
        return self.max_step_duration_s if self.step_duration_s == "auto" else self.step_duration_s

    @property
    def loads(self) -> list[int] | list[float]:
        """The load of each step: users (closed loop) or requests/s (open loop)."""
        return self.rates or self.steps

    @property
    def step_users(self) -> list[int]:
        """Users of each step: ``steps``, or in an open loop its first value (the cap on requests in
        flight) for every rate."""
        return self.steps[:1] * len(self.rates) if self.rates else self.steps

    @property
    def target_duration_s(self) -> float:
        """Longest the sweep of one target may take: steps x their longest (auto steps may end sooner)."""
        return len(self.loads) * self.longest_step_s

    @property
    def duration_s(self) -> float:
        """Longest the whole sweep's load may take, one target after another."""
        return self.target_duration_s * len(self.targets)

    @field_validator("warmup_s")
    @classmethod
    def _warmup_inside_step(cls, warmup_s: float, info: ValidationInfo) -> float:
        step_s = info.data.get("step_duration_s")  # absent when it failed its own check
        if step_s == "auto":
            step_s = info.data.get("max_step_duration_s")
        if step_s is not None and warmup_s >= step_s:
            raise ValueError(f"{warmup_s:g} s leaves nothing of a {step_s:g} s step to measure; make it shorter")
        return warmup_s

    @property
    def prompt_file(self) -> Path | None:
        """The file a ``jsonl:`` or ``sharegpt:`` prompt set reads, on the host that runs the load."""
        kind, _, arg = self.prompt_set.partition(":")
        return Path(arg) if kind in ("jsonl", "sharegpt") else None

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[TargetSpec]) -> list[TargetSpec]:
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique, got {names}")
        return targets


def validate_sweep(data: Any, labels: Mapping[str, str] | None = None) -> SweepFile:
    """A sweep from parsed data; ValueError naming every problem found (``field.path: message; ...``).

    ``labels`` names a field path as the user gave it, e.g. ``targets.0.url`` as ``--host``.
    """
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        problems: dict[str, None] = {}  # in order, once each: two fields can come from one option
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"])
            problems[f"{(labels or {}).get(path, path)}: {error['msg'].removeprefix('Value error, ')}"] = None
        raise ValueError("; ".join(problems)) from None


def parse_sweep_file(text: str, suffix: str) -> SweepFile:
    """Parse TOML (or JSON when ``suffix`` is ``.json``); ValueError with every problem found."""
    try:
        data = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"not valid {'JSON' if suffix == '.json' else 'TOML'}: {exc}") from None
    return validate_sweep(data)


def load_sweep_file(path: Path) -> SweepFile:
    """Read and validate a sweep file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return parse_sweep_file(text, path.suffix)
