"""The load model: running slots, a FIFO queue, batched decode steps and a KV-cache budget.

Pure and deterministic: every method takes ``now_ns`` from the caller and nothing reads a clock, so the
same calls on a virtual clock replay exactly. One step emits one token to every running sequence and
lasts ``step_base_ms + step_per_seq_ms * batch`` plus the prefill of the sequences admitted into it
(``prompt_tokens / prefill_tokens_per_s``); those get their first token when that step ends. With
``prefix_caching``, a prompt's leading blocks found in the prefix cache are not prefilled again; with
``preemption``, requests take KV cache as they generate and the last admitted gives way when it runs out.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from simulator.prefix_cache import PrefixCache
from simulator.profiles import Flavor, Profile

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000


class QueueFullError(Exception):
    """The waiting queue is at ``max_queue``; the request is refused."""


class ContextLengthError(ValueError):
    """The request does not fit the context (``limit`` tokens); the API layer words it as its server does."""

    def __init__(self, prompt_tokens: int, max_tokens: int | None, limit: int) -> None:
        super().__init__(f"{prompt_tokens} prompt tokens and max_tokens {max_tokens} exceed the context of {limit}")
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.limit = limit


class Sequence:
    """One request inside the engine; times are the engine's scheduled times on the caller's clock."""

    __slots__ = (
        "id",
        "prompt_tokens",
        "target_tokens",
        "finish_reason",
        "kv_tokens",
        "arrived_ns",
        "load_wait_ns",
        "admitted_ns",
        "first_token_ns",
        "finished_ns",
        "emitted",
        "cancelled",
        "listener",
        "prefix_blocks",
        "cached_tokens",
        "previous_token_ns",
        "last_token_ns",
    )

    def __init__(
        self, seq_id: int, prompt_tokens: int, target_tokens: int, finish_reason: str, now_ns: int, context: int
    ) -> None:
        self.id = seq_id
        self.prompt_tokens = prompt_tokens
        self.target_tokens = target_tokens
        self.finish_reason = finish_reason
        self.kv_tokens = min(prompt_tokens + target_tokens, context)
        """KV cache held: prompt and output reserved, never more than the context (Ollama shifts past it);
        with preemption, what it has computed and the token of the step it is in."""
        self.arrived_ns = now_ns
        self.load_wait_ns = 0
        self.admitted_ns: int | None = None
        self.first_token_ns: int | None = None
        self.finished_ns: int | None = None
        self.emitted = 0
        self.cancelled = False
        self.listener: Any = None
        """Opaque to the engine: whoever submitted the sequence hangs its stream writer here."""
        self.prefix_blocks: tuple[int, ...] = ()
        """Ids of the prompt's full blocks, each naming the whole prefix up to its end (chained hashes)."""
        self.cached_tokens: int | None = None
        """Prompt tokens the prefix cache held at the sequence's (last) admission, so not prefilled."""
        self.previous_token_ns: int | None = None
        self.last_token_ns: int | None = None
        """When the last token came, and the one before it (the gap a step ended, or a preemption)."""


@dataclass(slots=True)
class Step:
    """One forward pass: it starts at ``start_ns`` and, at ``end_ns``, gives a token to each of ``batch``."""

    start_ns: int
    end_ns: int
    batch: list[Sequence]
    admitted: int
    """How many sequences of ``batch`` joined in this step (their prefill is part of its duration)."""
    prefill_tokens: int
    """Tokens computed for the admitted sequences: their prompts (and, recomputed, what preempted ones had
    generated), less what the prefix cache held."""


class Engine:
    """Slots plus a FIFO queue; call :meth:`advance` at :meth:`next_event_ns` to run the step due."""

    def __init__(self, profile: Profile, replica: int = 0) -> None:
        self.profile = profile
        self._rng = random.Random(profile.seed * 1_000_003 + replica)
        self._waiting: deque[Sequence] = deque()
        self._step: Step | None = None
        self._kv_used = 0
        # Replicas number their sequences apart (k+1, k+1+n, ...) so ids stay unique across a server.
        self._next_id = 1 + replica
        self._id_step = profile.replicas
        self.active = 0
        """Sequences submitted and neither finished nor cancelled: what a balancer compares."""
        self._loaded_at_ns: int | None = None if profile.load_ms > 0 else 0
        self._idle_since_ns = 0
        self.loads = 0
        self.preemptions = 0
        self._p_stop = 1.0 / max(profile.mean_output_tokens, 1.0)
        self._prefix_cache = PrefixCache()

    # --- requests -------------------------------------------------------------------------------------
    def submit(
        self,
        prompt_tokens: int,
        max_tokens: int | None,
        now_ns: int,
        ignore_eos: bool = False,
        prefix_blocks: tuple[int, ...] = (),
    ) -> Sequence:
        """Queue a request; its output length is ``max_tokens`` or an EOS-like draw, whichever is first.

        ``prefix_blocks`` names the prompt's full blocks for the prefix cache
        (:func:`simulator.prefix_cache.prefix_block_ids`).

        What does not fit the context is handled as the flavour's server does: vLLM (as of 0.32) refuses
        a prompt that fills ``max_model_len`` or a ``max_tokens`` over it, and otherwise stops output at
        the context's end; llama-server refuses only a prompt that fills its slot's context and likewise
        stops output at the context's end; Ollama keeps the end of an over-long prompt and shifts its
        context while generating, so it refuses nothing.
        """
        p = self.profile
        limit = p.max_model_len
        room = limit - prompt_tokens
        cap: int | None = max_tokens
        if p.flavor is Flavor.OLLAMA:
            prompt_tokens = min(prompt_tokens, limit)
        else:
            if room < 1 or (p.flavor is Flavor.VLLM and max_tokens is not None and max_tokens > limit):
                raise ContextLengthError(prompt_tokens, max_tokens, limit)
            cap = room if max_tokens is None else min(max_tokens, room)
        if p.max_queue is not None and len(self._waiting) >= p.max_queue:
            raise QueueFullError("server busy, please try again. maximum pending requests exceeded")
        drawn = cap if ignore_eos and cap is not None and max_tokens is not None else self._draw_length()
        target, reason = (cap, "length") if cap is not None and drawn >= cap else (drawn, "stop")
        seq = Sequence(self._next_id, prompt_tokens, target, reason, now_ns, limit)
        seq.prefix_blocks = prefix_blocks
        self._next_id += self._id_step
        self.active += 1
        seq.load_wait_ns = self._ensure_loaded(now_ns)
        self._waiting.append(seq)
        step = self._step
        if step is not None and step.start_ns >= now_ns:
            # The step has not begun (it waits for the model load, or starts this very instant): rebuild
            # it so this request joins it, as a scheduler batching simultaneous arrivals would. What it
            # admitted goes back to the queue's head; what was running before runs on.
            running = step.batch[: len(step.batch) - step.admitted]
            for pending in reversed(step.batch[len(running) :]):
                if pending.first_token_ns is None:
                    pending.admitted_ns = None
                self._kv_used -= pending.kv_tokens
                if not pending.cancelled:
                    self._waiting.appendleft(pending)
            if self.profile.preemption:  # their token of this step is reserved again
                for seq_running in running:
                    seq_running.kv_tokens -= 1
                    self._kv_used -= 1
            self._step = None
            self._start_step(step.start_ns, running)
        elif step is None:
            self._start_step(now_ns, [])
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away; a running one frees its slot when the step ends."""
        if seq.cancelled or seq.finished_ns is not None:
            return
        seq.cancelled = True
        self.active -= 1
        if seq in self._waiting:  # queued, or preempted and queued again
            self._waiting.remove(seq)

    def _draw_length(self) -> int:
        """Geometric output length with the profile's mean: each token ends the sequence with p = 1/mean."""
        if self._p_stop >= 1.0:
            return 1
        return 1 + int(math.log(1.0 - self._rng.random()) / math.log(1.0 - self._p_stop))

    # --- model residency ------------------------------------------------------------------------------
    def _ensure_loaded(self, now_ns: int) -> int:
        """Start loading the model if it is not resident; returns how long this request waits for it."""
        if self._loaded_at_ns is None or self._expired(now_ns):
            self._loaded_at_ns = now_ns + round(self.profile.load_ms * _NS_PER_MS)
            self.loads += 1
        return max(0, self._loaded_at_ns - now_ns)

    def preload(self, now_ns: int) -> int:
        """Load the model with no request (Ollama's empty prompt); returns ns until it is resident.

        An idle engine's keep-alive then counts from the moment the model is resident.
        """
        wait_ns = self._ensure_loaded(now_ns)
        if self.idle:
            self._idle_since_ns = now_ns + wait_ns
        return wait_ns

    def _expired(self, now_ns: int) -> bool:
        keep_alive_ns = self.profile.keep_alive_s * _NS_PER_S
        return (
            self.profile.load_ms > 0
            and keep_alive_ns >= 0
            and self.idle
            and now_ns >= self._idle_since_ns + keep_alive_ns
        )

    def loaded(self, now_ns: int) -> bool:
        """Whether the model is resident (loaded and not yet unloaded by keep-alive) at ``now_ns``."""
        return self._loaded_at_ns is not None and self._loaded_at_ns <= now_ns and not self._expired(now_ns)

    def unloads_at_ns(self) -> int | None:
        """When keep-alive will unload the idle model; None while busy or when it stays loaded forever."""
        if not self.idle or self.profile.keep_alive_s < 0 or self.profile.load_ms <= 0:
            return None
        return self._idle_since_ns + round(self.profile.keep_alive_s * _NS_PER_S)

    # --- stepping -------------------------------------------------------------------------------------
    def next_event_ns(self) -> int | None:
        """When the current step ends (the next time :meth:`advance` has work), or None when idle."""
        return None if self._step is None else self._step.end_ns

    def advance(self, now_ns: int) -> Step | None:
        """Complete the current step if it ends at or before ``now_ns``, start the next, return the done one.

        The returned step's ``batch`` lists the sequences that got a token at its ``end_ns``; a sequence
        whose ``finished_ns`` is set got its last one. Call again until it returns None: one step at a
        time, so callers see each sequence's state as of that step.
        """
        step = self._step
        if step is None or step.end_ns > now_ns:
            return None
        self._finish_step(step)
        self._step = None
        self._start_step(step.end_ns, [s for s in step.batch if s.finished_ns is None])
        return step

    def _finish_step(self, step: Step) -> None:
        end_ns = step.end_ns
        emitted: list[Sequence] = []
        admitted_from = len(step.batch) - step.admitted
        for index, seq in enumerate(step.batch):
            if seq.cancelled:
                self._kv_used -= seq.kv_tokens
                continue
            seq.emitted += 1
            seq.previous_token_ns = seq.last_token_ns
            seq.last_token_ns = end_ns
            if seq.first_token_ns is None:
                seq.first_token_ns = end_ns
            if index >= admitted_from and self.profile.prefix_caching:
                self._prefix_cache.add(seq)  # its blocks are computed now (or again), usable by later prompts
            if seq.emitted >= seq.target_tokens:
                seq.finished_ns = end_ns
                self._kv_used -= seq.kv_tokens
                self.active -= 1
            emitted.append(seq)
        step.batch = emitted

    def _start_step(self, at_ns: int, running: list[Sequence]) -> None:
        if self._waiting and self._loaded_at_ns is not None:
            at_ns = max(at_ns, self._loaded_at_ns)
        admitted = 0
        prefill_tokens = 0
        p = self.profile
        if p.preemption:
            self._grow(running)
        while self._waiting and len(running) < p.max_running:
            seq = self._waiting[0]
            # With preemption a request needs its prompt, what it generated before (recomputed) and
            # this step's token; without, its prompt and output reserved.
            need = seq.prompt_tokens + seq.emitted + 1 if p.preemption else seq.kv_tokens
            if self._kv_used + need > p.kv_budget_tokens:
                break  # first come, first served: the head blocks the queue until the cache frees up
            self._waiting.popleft()
            seq.kv_tokens = need
            self._kv_used += need
            if seq.admitted_ns is None:  # the first admission: a preempted request keeps its own
                seq.admitted_ns = at_ns
            running.append(seq)
            admitted += 1
            if seq.cached_tokens is None:  # looked up once: a step rebuilt before it began admits again
                seq.cached_tokens = self._prefix_cache.lookup(seq) if p.prefix_caching else 0
            prefill_tokens += seq.prompt_tokens + seq.emitted - seq.cached_tokens
        if p.prefix_caching:
            self._prefix_cache.trim(p.kv_budget_tokens - self._kv_used, running)
        if not running:
            self._idle_since_ns = at_ns
            return
        duration_ms = p.step_base_ms + p.step_per_seq_ms * len(running)
        duration_ns = round(duration_ms * _NS_PER_MS + prefill_tokens * _NS_PER_S / p.prefill_tokens_per_s)
        self._step = Step(at_ns, at_ns + duration_ns, running, admitted, prefill_tokens)

    def _grow(self, running: list[Sequence]) -> None:
        """Give each running request room for this step's token, preempting the last admitted while
        there is not enough: vLLM frees its cache and queues it first, to recompute it later."""
        while running and self._kv_used + len(running) > self.profile.kv_budget_tokens:
            victim = running.pop()
            self._kv_used -= victim.kv_tokens
            victim.kv_tokens = 0
            victim.cached_tokens = None  # its prompt is looked up again when it is admitted again
            self._waiting.appendleft(victim)
            self.preemptions += 1
        for seq in running:
            seq.kv_tokens += 1
        self._kv_used += len(running)

    # --- state ----------------------------------------------------------------------------------------
    @property
    def prefix_queried_tokens(self) -> int:
        """Prompt tokens looked up in the prefix cache (first admissions only)."""
        return self._prefix_cache.queried_tokens

    @property
    def prefix_hit_tokens(self) -> int:
        """Of those, the tokens the prefix cache held."""
        return self._prefix_cache.hit_tokens

    @property
    def idle(self) -> bool:
        """No sequence running or waiting."""
        return self._step is None and not self._waiting

    @property
    def num_running(self) -> int:
        return 0 if self._step is None else sum(1 for s in self._step.batch if not s.cancelled)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_used_tokens(self) -> int:
        """KV tokens held by admitted sequences (reserved prompt and output, or, with preemption, computed)."""
        return self._kv_used

    @property
    def kv_usage(self) -> float:
        """Reserved share of the KV budget, 0..1."""
        return self._kv_used / self.profile.kv_budget_tokens

    def running(self) -> list[Sequence]:
        """The sequences of the current step."""
        return [] if self._step is None else [s for s in self._step.batch if not s.cancelled]
