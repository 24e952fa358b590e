"""Per-run options as Locust custom arguments: listed by ``--help`` and forwarded to workers."""

from __future__ import annotations

import uuid
from typing import Any

from stampede.metrics import MIN_COMPLETIONS
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT


def add_chat_arguments(parser: Any) -> None:
    """Register the options of ``loadgen/chat.py``."""
    group = parser.add_argument_group("Stampede", "Chat load against an LLM runtime; API key from STAMPEDE_API_KEY")
    group.add_argument("--model", default="stampede-sim", help="Model name sent in every request.")
    group.add_argument("--max-tokens", type=int, default=128, help="Most output tokens asked per request.")
    group.add_argument(
        "--prompt-set",
        default="seeds",
        help="seeds | synthetic:input=DIST,output=DIST[,count=N] | jsonl:PATH | sharegpt:PATH "
        "(DIST: N, uniform(A,B), normal(MEAN,SD)).",
    )
    group.add_argument(
        "--ignore-eos",
        action="store_true",
        help="Ask the server to generate exactly max tokens (vLLM and llama.cpp `ignore_eos`).",
    )
    group.add_argument(
        "--tokenizer",
        default="",
        help="Count tokens on the client too: a tokenizer.json path or folder, or tiktoken:NAME (installed locally).",
    )
    group.add_argument(
        "--no-live-figures",
        action="store_true",
        help="Leave the LLM tab out of Locust's web UI, and its table out of --html, --csv and --json-file.",
    )
    group.add_argument("--target-name", default="", help="Label of the target in reports (default: host:port).")
    group.add_argument("--run-id", default="", help="Run id shared by all processes (default: a new one).")
    group.add_argument("--run-name", default="", help="Human label for the run.")
    group.add_argument(
        "--sweep-config", default="", help="The sweep file behind this run, as JSON (set by `stampede sweep`)."
    )
    group.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="Seconds left out of each step's figures after its load holds steady (its users all in flight, "
        "one producing output).",
    )
    group.add_argument(
        "--min-completions",
        type=int,
        default=MIN_COMPLETIONS,
        help="Completed requests a step's window needs for its figures to be trusted (fewer: marked too short).",
    )
    group.add_argument("--request-timeout-s", type=float, default=300.0, help="Longest a whole request may take.")
    group.add_argument("--seed", type=int, default=0, help="Seed for prompt choice and arrivals.")
    group.add_argument(
        "--request-rate",
        type=float,
        default=0.0,
        help="Open loop: requests per second over all processes (0: closed loop); users cap requests in flight.",
    )
    group.add_argument("--arrival", default="poisson", choices=["constant", "poisson", "gamma"], help="Open-loop gaps.")
    group.add_argument(
        "--burstiness", type=float, default=1.0, help="Gamma arrivals: squared CV of the gaps (1 = Poisson)."
    )


def add_step_arguments(parser: Any) -> None:
    """Register the options of the stepped load shape (``loadgen/steps.py``)."""
    group = parser.add_argument_group("Stampede steps", "A ladder of concurrency levels")
    group.add_argument(
        "--steps",
        default="",
        help="Comma-separated user counts, one per step (default 1,2,4,8); with --rates, one value: the cap "
        f"on requests in flight (default {OPEN_LOOP_IN_FLIGHT}).",
    )
    group.add_argument(
        "--step-duration-s",
        default="10",
        help="Seconds each step lasts, or auto: until its window holds --min-completions completed requests and "
        "three times their median E2E, within --max-step-duration-s.",
    )
    group.add_argument("--max-step-duration-s", type=float, default=600.0, help="Longest an auto step lasts.")
    group.add_argument(
        "--rates",
        default="",
        help="Open-loop ladder: comma-separated request rates, one per step; --steps then gives one value, "
        "the cap on requests in flight.",
    )


def step_users(steps: str, rates: list[float]) -> list[int]:
    """Users of each step: ``--steps`` (default 1,2,4,8), or with ``rates`` its first value (default
    :data:`OPEN_LOOP_IN_FLIGHT`) for every rate."""
    if rates:
        return parse_steps(steps or str(OPEN_LOOP_IN_FLIGHT))[:1] * len(rates)
    return parse_steps(steps or "1,2,4,8")


def parse_step_duration(text: str) -> float | None:
    """``"20"`` → 20.0, ``"auto"`` → None; ValueError for anything else."""
    if text == "auto":
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"--step-duration-s must be seconds or auto, got {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"--step-duration-s must be > 0, got {text!r}")
    return seconds


def parse_steps(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; ValueError for anything but positive integers."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, got {text!r}") from None
    if not steps or any(s < 1 for s in steps):
        raise ValueError(f"--steps needs at least one step and every step >= 1 user, got {text!r}")
    return steps


def parse_rates(text: str) -> list[float]:
    """``"0.5,2"`` → ``[0.5, 2.0]``; empty for closed loop; ValueError unless every rate is > 0."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated numbers, got {text!r}") from None
    if any(r <= 0 for r in rates):
        raise ValueError(f"every rate in --rates must be > 0, got {text!r}")
    return rates


def ensure_run_id(options: Any) -> None:
    """Give the run a new id unless one was passed; the master forwards it to its workers."""
    if not options.run_id:
        options.run_id = str(uuid.uuid4())


if __name__ == "__main__":
    # Locust prints --help before it loads the locustfile, so its help never shows these options.
    import argparse

    _parser = argparse.ArgumentParser(prog="locust -f loadgen/chat.py", description="Stampede's Locust options")
    add_chat_arguments(_parser)
    _parser.print_help()
