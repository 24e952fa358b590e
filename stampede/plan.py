"""One plan per run: ``stampede sweep``'s options and hand-run Locust's flags both become a :class:`SweepFile`.

The flags of the two share their names (``--steps 1,2,4 --step-duration-s 20 ...``) and are read by
one function, :func:`sweep_from_flags`, with the validation of :class:`SweepFile`. A sweep hands
Locust the plan itself (``--sweep-config``, plus the target and the run id); a Locust run by hand
builds it from its flags. Either way the Locust process reads typed fields (:class:`LocustPlan`) and
stores a validated dump (:class:`RunConfig`).

Defaults: a sweep file's are :class:`SweepFile`'s. Three flags default differently for a command
line, each defined once below: ``stampede sweep`` (:data:`SWEEP_FLAGS`) takes shorter steps than a
file, for a first look, and hand-run Locust (:data:`LOCUST_FLAGS`) a shorter ladder with no warm-up,
as a quick test to watch in Locust's own UI.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stampede.records import Api
from stampede.sweepfile import SweepFile, TargetSpec, validate_sweep

DEFAULT_MODEL = "stampede-sim"
"""The model a command line asks for when it names none: the built-in simulator's."""

# The sweep fields that flags set, named as the user typed them in error messages.
FLAG_LABELS = {
    "name": "--run-name",
    "targets.0.name": "--target-name",
    "targets.0.url": "--host",
    "targets.0.api": "--api",
    "targets.0.model": "--model",
    "targets.0.runtime": "--runtime",
    "steps": "--steps",
    "rates": "--rates",
    "step_duration_s": "--step-duration-s",
    "max_step_duration_s": "--max-step-duration-s",
    "warmup_s": "--warmup-s",
    "min_completions": "--min-completions",
    "max_tokens": "--max-tokens",
    "prompt_set": "--prompt-set",
    "processes": "--processes",
    "arrival": "--arrival",
    "burstiness": "--burstiness",
    "seed": "--seed",
}
# Flags copied as they are when given, else their default on that command line.
_PLAIN_FLAGS = (
    "warmup_s", "max_step_duration_s", "min_completions", "max_tokens", "ignore_eos", "prompt_set", "processes",
    "arrival", "burstiness", "seed",
)  # fmt: skip


def default(name: str) -> Any:
    """A sweep file's default for field ``name``."""
    return SweepFile.model_fields[name].get_default(call_default_factory=True)


@dataclass(frozen=True)
class FlagDefaults:
    """What a command line's flags mean when left out: a sweep file's defaults, but for the first three."""

    steps: tuple[int, ...]
    step_duration_s: str
    warmup_s: float
    max_step_duration_s: float = default("max_step_duration_s")
    min_completions: int = default("min_completions")
    max_tokens: int = default("max_tokens")
    prompt_set: str = default("prompt_set")
    arrival: str = default("arrival")
    burstiness: float = default("burstiness")
    seed: int = default("seed")
    processes: int = default("processes")
    model: str = DEFAULT_MODEL


SWEEP_FLAGS = FlagDefaults(steps=tuple(default("steps")), step_duration_s="20", warmup_s=5.0)
"""``stampede sweep --host ...``: a sweep file's ladder, with shorter steps."""
LOCUST_FLAGS = FlagDefaults(steps=(1, 2, 4, 8), step_duration_s="10", warmup_s=0.0)
"""``locust -f loadgen/chat.py,loadgen/steps.py ...`` by hand: a short ladder, no warm-up."""


def parse_list(text: str, kind: type[int] | type[float], flag: str) -> list[Any]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; ValueError naming ``flag`` for anything not a number."""
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def sweep_from_flags(flags: Mapping[str, Any], defaults: FlagDefaults) -> SweepFile:
    """The sweep that command-line flags describe (one target); ValueError naming every bad flag.

    ``flags`` holds the flags by their option names (``host``, ``steps``, ``step_duration_s`` ...), as
    text where the user typed a list; ``defaults`` fills those left out or empty.
    Without ``steps``, an open loop (``rates``) gets :data:`~stampede.sweepfile.OPEN_LOOP_IN_FLIGHT`.
    """
    host = str(flags.get("host") or "")
    name = flags.get("target_name") or host.split("://")[-1].rstrip("/")
    # Names not given are taken from the host: a mistake in them is one in --host.
    names_from = {
        "name": "--run-name" if flags.get("run_name") else "--host",
        "targets.0.name": "--target-name" if flags.get("target_name") else "--host",
    }
    api, model = flags.get("api") or Api.OPENAI_CHAT, flags.get("model") or defaults.model
    target = {"name": name, "url": host, "api": api, "model": model}
    if flags.get("runtime"):
        target["runtime"] = flags["runtime"]
    rates = parse_list(flags.get("rates") or "", float, "--rates")
    data: dict[str, Any] = {
        "name": flags.get("run_name") or name,
        "targets": [{k: v for k, v in target.items() if v is not None}],
        "rates": rates,
        "step_duration_s": flags.get("step_duration_s") or defaults.step_duration_s,
    }
    if flags.get("steps"):
        data["steps"] = parse_list(flags["steps"], int, "--steps")
    elif not rates:
        data["steps"] = list(defaults.steps)
    for key in _PLAIN_FLAGS:
        value = flags[key] if flags.get(key) is not None else getattr(defaults, key, None)
        if value is not None:
            data[key] = value
    return validate_sweep(data, {**FLAG_LABELS, **names_from})


@dataclass(frozen=True)
class SweepPlan:
    """A sweep file bound to a run."""

    spec: SweepFile
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    stop_timeout_s: float = 120.0


@dataclass(frozen=True)
class LocustPlan:
    """What one Locust run loads: its sweep (one target's flags, or the sweep that started it) and the target."""

    sweep: SweepFile
    target: TargetSpec
    from_sweep: bool
    """The plan came whole from ``stampede sweep`` (``--sweep-config``), not from flags."""


def locust_plan(flags: Mapping[str, Any], target_name: str) -> LocustPlan:
    """The plan of a Locust process from its flags (``vars(parsed_options)`` and ``host`` and ``api``);
    ``target_name`` names its target. ValueError naming every bad flag."""
    if flags.get("sweep_config"):
        sweep = SweepFile.model_validate_json(flags["sweep_config"])
        named = [t for t in sweep.targets if t.name == target_name]
        target = named[0] if named else sweep.targets[0] if len(sweep.targets) == 1 else None
        if target is None:
            raise ValueError(f"--target-name: {target_name!r} is not a target of --sweep-config")
        return LocustPlan(sweep, target, from_sweep=True)
    # Locust's own --processes forks this one: no field of the plan.
    flags = {key: value for key, value in flags.items() if key != "processes"}
    sweep = sweep_from_flags({**flags, "target_name": target_name}, LOCUST_FLAGS)
    return LocustPlan(sweep, sweep.targets[0], from_sweep=False)


class RunConfig(BaseModel):
    """A run's stored ``config``: how its load was made, and the sweep behind it, if any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(description="The target's base URL, without credentials.")
    user_classes: list[str] = Field(description="Locust user classes that made the load.")
    model: str = Field(description="Model requested.")
    max_tokens: int = Field(description="Most output tokens asked per request.")
    prompt_set: str = Field(description="Prompt set of the requests.")
    # A stepped load shape's; None for a plain Locust run (its users and time limit make the load).
    steps: list[int] | None = Field(default=None, description="Users of each step (open loop: the cap in flight).")
    rates: list[float] | None = Field(default=None, description="Open loop: requests/s of each step.")
    step_duration_s: float | Literal["auto"] | None = Field(default=None, description="Seconds each step lasts.")
    warmup_s: float = Field(description="Seconds left out of each step's figures.")
    min_completions: int = Field(description="Completions a step's window needs.")
    request_rate: float = Field(description="Open loop without a step shape: requests/s (0: closed loop).")
    arrival: str = Field(description="Open-loop gaps: constant, poisson or gamma.")
    burstiness: float = Field(description="Gamma arrivals: squared CV of the gaps.")
    sweep: SweepFile | None = Field(default=None, description="The sweep file of ``stampede sweep``, if any.")

    @staticmethod
    def stored_sweep(config: Mapping[str, Any]) -> SweepFile | None:
        """The sweep behind a stored run config, as the same type; None when the run had none (or it was
        stored in a shape this version no longer reads)."""
        try:
            return SweepFile.model_validate(config["sweep"]) if config.get("sweep") else None
        except ValidationError:
            return None
