"""Prompt sets: named lists of chat conversations, each with a stable id for the records."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """One conversation to send."""

    id: str
    messages: tuple[dict[str, str], ...]


def _user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


# The requests people fire by hand today, in English and Chinese.
SEEDS = (
    Prompt("story-en", _user("Write a 1000-word story.")),
    Prompt("story-zh", _user("写一个1000字的故事。")),
    Prompt("sky-en", _user("Why is the sky blue?")),
    Prompt("sky-zh", _user("为什么天空是蓝色的？")),
)

PROMPT_SETS: dict[str, tuple[Prompt, ...]] = {"seeds": SEEDS}


def get_prompt_set(name: str) -> tuple[Prompt, ...]:
    """The prompt set called ``name``; ValueError naming the known sets otherwise."""
    try:
        return PROMPT_SETS[name]
    except KeyError:
        raise ValueError(f"unknown prompt set {name!r}; known: {', '.join(sorted(PROMPT_SETS))}") from None


class PromptPicker:
    """Draws prompts from a set in a seeded random order, so runs repeat exactly."""

    def __init__(self, prompts: tuple[Prompt, ...], seed: int) -> None:
        self._prompts = prompts
        self._rng = random.Random(seed)

    def next(self) -> Prompt:
        return self._rng.choice(self._prompts)
