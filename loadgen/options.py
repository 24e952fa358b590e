"""Per-run options as Locust custom arguments: listed by ``--help`` and forwarded to workers.

Their defaults are hand-run Locust's (:data:`stampede.plan.LOCUST_FLAGS`), and they are read and
checked by :func:`stampede.plan.locust_plan`, once per test, into the typed plan every process uses.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any, Protocol, cast

from stampede.plan import LOCUST_FLAGS, LocustPlan, locust_plan
from stampede.records import Api
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT

DEFAULTS = LOCUST_FLAGS


class ChatOptions(Protocol):
    """The options a Locust process reads itself, beside its plan (a typed view of ``parsed_options``)."""

    run_id: str
    run_name: str
    target_name: str
    tokenizer: str
    request_timeout_s: float
    request_rate: float
    num_users: int | None


def chat_options(parsed_options: Any) -> ChatOptions:
    """``environment.parsed_options`` seen as :class:`ChatOptions` (registered by :func:`add_chat_arguments`)."""
    return cast(ChatOptions, parsed_options)


def plan_of(parsed_options: Any, host: str, api: Api, target_name: str) -> LocustPlan:
    """The run's plan from Locust's options; ValueError naming every bad flag."""
    return locust_plan({**vars(parsed_options), "host": host, "api": api}, target_name)


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``loadgen/chat.py``."""
    group = parser.add_argument_group("Stampede", "Chat load against an LLM runtime; API key from STAMPEDE_API_KEY")
    group.add_argument("--model", default=DEFAULTS.model, help="Model name sent in every request.")
    group.add_argument(
        "--max-tokens", type=int, default=DEFAULTS.max_tokens, help="Most output tokens asked per request."
    )
    group.add_argument(
        "--prompt-set",
        default=DEFAULTS.prompt_set,
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
        "--sweep-config",
        default="",
        help="The sweep behind this run, as JSON (set by `stampede sweep`); replaces the load's other options.",
    )
    group.add_argument(
        "--warmup-s",
        type=float,
        default=DEFAULTS.warmup_s,
        help="Seconds left out of each step's figures after its load holds steady (its users all in flight, "
        "one producing output).",
    )
    group.add_argument(
        "--min-completions",
        type=int,
        default=DEFAULTS.min_completions,
        help="Completed requests a step's window needs for its figures to be trusted (fewer: marked too short).",
    )
    group.add_argument("--request-timeout-s", type=float, default=300.0, help="Longest a whole request may take.")
    group.add_argument("--seed", type=int, default=DEFAULTS.seed, help="Seed for prompt choice and arrivals.")
    group.add_argument(
        "--request-rate",
        type=float,
        default=0.0,
        help="Open loop: requests per second over all processes (0: closed loop); users cap requests in flight.",
    )
    group.add_argument(
        "--arrival", default=DEFAULTS.arrival, choices=["constant", "poisson", "gamma"], help="Open-loop gaps."
    )
    group.add_argument(
        "--burstiness",
        type=float,
        default=DEFAULTS.burstiness,
        help="Gamma arrivals: squared CV of the gaps (1 = Poisson).",
    )


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of the stepped load shape (``loadgen/steps.py``)."""
    group = parser.add_argument_group("Stampede steps", "A ladder of concurrency levels")
    group.add_argument(
        "--steps",
        default="",
        help=f"Comma-separated user counts, one per step (default {','.join(map(str, DEFAULTS.steps))}); with "
        f"--rates, one value: the cap on requests in flight (default {OPEN_LOOP_IN_FLIGHT}).",
    )
    group.add_argument(
        "--step-duration-s",
        default=DEFAULTS.step_duration_s,
        help="Seconds each step lasts, or auto: until its window holds --min-completions completed requests and "
        "three times their median E2E, within --max-step-duration-s.",
    )
    group.add_argument(
        "--max-step-duration-s", type=float, default=DEFAULTS.max_step_duration_s, help="Longest an auto step lasts."
    )
    group.add_argument(
        "--rates",
        default="",
        help="Open-loop ladder: comma-separated request rates, one per step; --steps then gives one value, "
        "the cap on requests in flight.",
    )


def ensure_run_id(options: ChatOptions) -> None:
    """Give the run a new id unless one was passed; the master forwards it to its workers."""
    if not options.run_id:
        options.run_id = str(uuid.uuid4())


if __name__ == "__main__":
    # Locust prints --help before it loads the locustfile, so its help never shows these options.
    _parser = argparse.ArgumentParser(prog="locust -f loadgen/chat.py", description="Stampede's Locust options")
    add_chat_arguments(_parser)
    _parser.print_help()
