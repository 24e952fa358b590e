"""Per-run options as Locust custom arguments: listed by ``--help`` and forwarded to workers."""

from __future__ import annotations

import uuid
from typing import Any

from loadgen.prompts import PROMPT_SETS


def add_chat_arguments(parser: Any) -> None:
    """Register the options of ``loadgen/chat.py``."""
    group = parser.add_argument_group("Stampede", "Chat load against an LLM runtime; API key from STAMPEDE_API_KEY")
    group.add_argument("--model", default="stampede-sim", help="Model name sent in every request.")
    group.add_argument("--max-tokens", type=int, default=128, help="Most output tokens asked per request.")
    group.add_argument(
        "--prompt-set", default="seeds", choices=sorted(PROMPT_SETS), help="Prompts to draw requests from."
    )
    group.add_argument("--target-name", default="", help="Label of the target in reports (default: host:port).")
    group.add_argument("--run-id", default="", help="Run id shared by all processes (default: a new one).")
    group.add_argument("--run-name", default="", help="Human label for the run.")
    group.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="Seconds at the start of each step left out of its figures.",
    )
    group.add_argument("--request-timeout-s", type=float, default=300.0, help="Longest a whole request may take.")
    group.add_argument("--seed", type=int, default=0, help="Seed for prompt choice.")


def add_step_arguments(parser: Any) -> None:
    """Register the options of the stepped load shape (``loadgen/steps.py``)."""
    group = parser.add_argument_group("Stampede steps", "A ladder of concurrency levels")
    group.add_argument("--steps", default="1,2,4,8", help="Comma-separated user counts, one per step.")
    group.add_argument("--step-duration-s", type=float, default=10.0, help="Seconds each step lasts.")


def parse_steps(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; ValueError for anything but positive integers."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, got {text!r}") from None
    if not steps or any(s < 1 for s in steps):
        raise ValueError(f"--steps needs at least one step and every step >= 1 user, got {text!r}")
    return steps


def ensure_run_id(options: Any) -> None:
    """Give the run a new id unless one was passed; the master forwards it to its workers."""
    if not options.run_id:
        options.run_id = str(uuid.uuid4())
