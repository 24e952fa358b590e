"""vLLM's prefix cache as the engine models it: prompts' full blocks, least recently used first.

A prompt is named by the ids of its full blocks (:func:`prefix_block_ids`), each naming the whole prefix
up to its end, so a block matches only after the same prefix. Cached blocks live in KV memory: the
engine trims the cache to what its free memory holds, plus the blocks of prompts it is running.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.engine import Sequence

PREFIX_BLOCK_TOKENS = 16
"""vLLM's default KV block size: prefix caching reuses whole blocks only."""


def prefix_block_ids(tokens: list[str]) -> tuple[int, ...]:
    """An id per full block of ``tokens``, each naming the whole prefix up to the block's end (a hash
    chained over the blocks, as vLLM's block hashes are), so a block matches only after the same prefix."""
    ids = []
    previous = 0
    for start in range(0, len(tokens) - PREFIX_BLOCK_TOKENS + 1, PREFIX_BLOCK_TOKENS):
        previous = hash((previous, *tokens[start : start + PREFIX_BLOCK_TOKENS]))
        ids.append(previous)
    return tuple(ids)


class PrefixCache:
    """Block ids, least recently used first, and the lookups' counts in tokens, as vLLM exports them."""

    def __init__(self) -> None:
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.queried_tokens = 0
        self.hit_tokens = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block: object) -> bool:
        return block in self._blocks

    def lookup(self, seq: Sequence) -> int:
        """Prompt tokens of ``seq`` the cache holds: its leading blocks found, whole blocks only and never
        the whole prompt (the last token is always computed), as vLLM reuses them."""
        found = 0
        for block in seq.prefix_blocks:
            if block not in self._blocks:
                break
            self._blocks.move_to_end(block)
            found += 1
        cached = min(found, max(seq.prompt_tokens - 1, 0) // PREFIX_BLOCK_TOKENS) * PREFIX_BLOCK_TOKENS
        if seq.emitted == 0:  # vLLM counts a preempted request's lookups apart, and does not export them
            self.queried_tokens += seq.prompt_tokens
            self.hit_tokens += cached
        return cached

    def add(self, seq: Sequence) -> None:
        """Make the computed prompt's blocks the most recently used, its first block last: when memory
        runs short, vLLM frees a request's blocks from its tail, keeping the prefix others share."""
        for block in reversed(seq.prefix_blocks):
            self._blocks[block] = None
            self._blocks.move_to_end(block)

    def trim(self, free_tokens: int, running: Iterable[Sequence]) -> None:
        """Keep the blocks of running prompts plus what ``free_tokens`` of KV memory hold; the least
        recently used beyond that are evicted, so a full KV cache keeps few spare prefixes."""
        free_blocks = max(free_tokens, 0) // PREFIX_BLOCK_TOKENS
        if len(self._blocks) <= free_blocks:
            return
        in_use = {block for seq in running if seq.first_token_ns is not None for block in seq.prefix_blocks}
        limit = free_blocks + len(in_use.intersection(self._blocks))  # a prefix shared by many is held once
        while len(self._blocks) > limit:
            self._blocks.popitem(last=False)
