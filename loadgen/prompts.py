"""Prompt sets: what to send, each prompt with a stable id for the records.

``--prompt-set`` takes one of:

- ``seeds``: the requests people fire by hand today, in English and Chinese;
- ``synthetic:input=DIST,output=DIST[,count=N][,seed=S][,system=N]``: generated prompts whose input
  and output lengths in tokens are drawn from ``DIST`` = ``N``, ``uniform(A,B)`` or
  ``normal(MEAN,SD)``; the output length becomes the request's max tokens (add ``--ignore-eos`` to
  make it exact). ``system=N`` puts the same system message of N words before every prompt: a shared
  prefix, as an application's instructions are, which a runtime's prefix cache can reuse;
- ``jsonl:PATH``: one JSON object per line with ``messages`` (and optional ``id``, ``max_tokens``);
- ``sharegpt:PATH``: a ShareGPT file; the first human turn of each conversation is sent.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

Messages = tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Prompt:
    """One conversation to send."""

    id: str
    messages: Messages
    max_tokens: int | None = None


def _user(text: str) -> Messages:
    return ({"role": "user", "content": text},)


SEEDS = (
    Prompt("seeds/story-en", _user("Write a 1000-word story.")),
    Prompt("seeds/story-zh", _user("写一个1000字的故事。")),
    Prompt("seeds/sky-en", _user("Why is the sky blue?")),
    Prompt("seeds/sky-zh", _user("为什么天空是蓝色的？")),
)

# Short, common English words: about one token each in the usual BPE vocabularies (with the
# leading space), so a synthetic prompt of N words is close to N tokens without a tokenizer.
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "it",
    "by",
    "at",
    "from",
    "his",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "had",
    "not",
    "one",
    "but",
    "what",
    "all",
    "when",
    "can",
    "said",
    "there",
    "use",
    "each",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
]

_DIST = re.compile(r"^(?:(?P<fixed>\d+)|(?P<kind>uniform|normal)\((?P<a>[\d.]+),(?P<b>[\d.]+)\))$")


def _draw(spec: str, rng: random.Random) -> int:
    match = _DIST.match(spec.replace(" ", ""))
    if match is None:
        raise ValueError(f"not a length distribution: {spec!r} (use N, uniform(A,B) or normal(MEAN,SD))")
    if match["fixed"]:
        return int(match["fixed"])
    a, b = float(match["a"]), float(match["b"])
    value = rng.uniform(a, b) if match["kind"] == "uniform" else rng.gauss(a, b)
    return max(1, round(value))


def synthetic(options: str) -> tuple[Prompt, ...]:
    """Prompts with drawn input and output lengths; see the module docstring for ``options``."""
    fields = dict(part.split("=", 1) for part in re.split(r",(?![^(]*\))", options) if "=" in part)
    unknown = set(fields) - {"input", "output", "count", "seed", "system"}
    if unknown or not {"input", "output"} <= set(fields):
        raise ValueError(
            f"synthetic prompt set needs input=DIST,output=DIST[,count=N][,seed=S][,system=N]; got {options!r}"
        )
    seed = int(fields.get("seed", "0"))
    system_rng = random.Random(f"system {seed}")  # apart, so adding a system message keeps the prompts
    system = " ".join(system_rng.choice(WORDS) for _ in range(int(fields.get("system", "0"))))
    rng = random.Random(seed)
    prompts = []
    for n in range(int(fields.get("count", "100"))):
        words = [rng.choice(WORDS) for _ in range(_draw(fields["input"], rng))]
        messages = _user(" ".join(words))
        if system:
            messages = ({"role": "system", "content": system}, *messages)
        prompts.append(Prompt(f"synthetic/{n}", messages, max_tokens=_draw(fields["output"], rng)))
    return tuple(prompts)


def from_jsonl(path: Path) -> tuple[Prompt, ...]:
    """Prompts from a JSONL file of ``{"messages": [...], "id"?: str, "max_tokens"?: int}``."""
    prompts = []
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in obj["messages"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected {{'messages': [{{'role', 'content'}}...]}} ({exc})") from None
        prompts.append(Prompt(f"{path.name}/{obj.get('id', n)}", messages, obj.get("max_tokens")))
    return tuple(prompts)


def from_sharegpt(path: Path) -> tuple[Prompt, ...]:
    """The first human turn of each conversation of a ShareGPT JSON file."""
    try:
        conversations = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    prompts = []
    for n, item in enumerate(conversations):
        turns = item.get("conversations") or []
        first = next((t["value"] for t in turns if t.get("from") == "human" and t.get("value")), None)
        if first is not None:
            prompts.append(Prompt(f"{path.name}/{item.get('id', n)}", _user(first)))
    return tuple(prompts)


def get_prompt_set(spec: str) -> tuple[Prompt, ...]:
    """The prompts named by ``spec``; ValueError saying what is wrong otherwise."""
    kind, _, arg = spec.partition(":")
    if kind == "seeds" and not arg:
        prompts: tuple[Prompt, ...] = SEEDS
    elif kind == "synthetic":
        prompts = synthetic(arg)
    elif kind in ("jsonl", "sharegpt"):
        path = Path(arg)
        if not path.is_file():
            raise ValueError(f"prompt file not found: {arg}")
        prompts = from_jsonl(path) if kind == "jsonl" else from_sharegpt(path)
    else:
        raise ValueError(f"unknown prompt set {spec!r}: use seeds, synthetic:..., jsonl:PATH or sharegpt:PATH")
    if not prompts:
        raise ValueError(f"prompt set {spec!r} has no prompts")
    return prompts


class PromptPicker:
    """Draws prompts from a set in a seeded random order, so runs repeat exactly."""

    def __init__(self, prompts: tuple[Prompt, ...], seed: int) -> None:
        self._prompts = prompts
        self._rng = random.Random(seed)

    def next(self) -> Prompt:
        return self._rng.choice(self._prompts)
