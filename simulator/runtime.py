"""Drives the pure engines on the event loop with ONE timer, and streams each step's tokens to clients.

Event-loop timers have millisecond granularity, so the timer is armed a millisecond before the next
step ends, re-armed (serving I/O meanwhile) while it is still early, and only the last ~0.15 ms is slept:
tokens leave at their scheduled time rather than up to a millisecond late, and the loop never blocks
for long. Each :class:`Exchange` renders one response in its wire format, records ground truth
and plays its fault.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.engine import Engine, Sequence
from simulator.faults import FaultKind
from simulator.groundtruth import RequestTruth, TruthLog
from simulator.http import Response
from simulator.metrics import Stats
from simulator.profiles import Profile

if TYPE_CHECKING:
    from simulator.server import SimServer

_EARLY_NS = 1_000_000
"""Arm the timer this much before a step ends."""
_SLEEP_MAX_NS = 150_000
"""Sleep (blocking the loop) at most this long to hit a step's end exactly; earlier, poll again."""
_LAG_WARN_NS = 50_000_000
"""Warn (at most every 10 s) when a step's tokens go out this late: the simulator itself is short of CPU."""

log = logging.getLogger(__name__)


def _active(engine: Engine) -> int:
    return engine.active


class Runtime:
    """The profile's engine replicas, one timer for all, and the per-step bookkeeping (stats, fan-out)."""

    def __init__(self, profile: Profile, truth: TruthLog) -> None:
        self.profile = profile
        self.engines = [Engine(profile, replica) for replica in range(profile.replicas)]
        self.stats = Stats()
        self.truth = truth
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ns: int | None = None
        self._warned_ns = -(10**12)

    def submit(
        self,
        prompt_tokens: int,
        max_tokens: int | None,
        ignore_eos: bool,
        exchange: Exchange,
        prefix_blocks: tuple[int, ...] = (),
    ) -> Sequence:
        """Queue a request on the least-loaded replica; raises the engine's QueueFullError / ContextLengthError."""
        engine = min(self.engines, key=_active)
        seq = engine.submit(prompt_tokens, max_tokens, time.monotonic_ns(), ignore_eos, prefix_blocks)
        seq.listener = exchange
        exchange.engine = engine
        self._arm()
        return seq

    # --- views over all replicas, for /metrics, /api/ps and /slots --------------------------------------
    @property
    def num_running(self) -> int:
        return sum(e.num_running for e in self.engines)

    @property
    def num_waiting(self) -> int:
        return sum(e.num_waiting for e in self.engines)

    @property
    def kv_used_tokens(self) -> int:
        return sum(e.kv_used_tokens for e in self.engines)

    @property
    def preemptions(self) -> int:
        return sum(e.preemptions for e in self.engines)

    @property
    def prefix_queried_tokens(self) -> int:
        return sum(e.prefix_queried_tokens for e in self.engines)

    @property
    def prefix_hit_tokens(self) -> int:
        return sum(e.prefix_hit_tokens for e in self.engines)

    @property
    def kv_usage(self) -> float:
        """Reserved share of all replicas' KV budgets, 0..1."""
        return self.kv_used_tokens / (self.profile.kv_budget_tokens * len(self.engines))

    def preload(self, now_ns: int) -> int:
        """Load the model on every replica; returns ns until all have it resident."""
        return max(e.preload(now_ns) for e in self.engines)

    def loaded(self, now_ns: int) -> bool:
        """Whether any replica has the model resident."""
        return any(e.loaded(now_ns) for e in self.engines)

    def unloads_at_ns(self) -> int | None:
        """When the last idle replica unloads; None while any is busy or none ever unloads."""
        times = [e.unloads_at_ns() for e in self.engines]
        return None if None in times else max(t for t in times if t is not None)

    def running(self) -> list[list[Sequence]]:
        """Each replica's current batch."""
        return [e.running() for e in self.engines]

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _next_event_ns(self) -> int | None:
        times = [t for e in self.engines if (t := e.next_event_ns()) is not None]
        return min(times) if times else None

    def _arm(self) -> None:
        at_ns = self._next_event_ns()
        if at_ns is None or at_ns == self._timer_at_ns:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at_ns = at_ns
        delay_s = max(0.0, (at_ns - _EARLY_NS - time.monotonic_ns()) / 1e9)
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at_ns = None
        at_ns = self._next_event_ns()
        if at_ns is None:
            return
        remaining_ns = at_ns - time.monotonic_ns()
        if remaining_ns > _SLEEP_MAX_NS:
            self._timer_at_ns = at_ns
            self._timer = asyncio.get_running_loop().call_later((remaining_ns - _SLEEP_MAX_NS) / 1e9, self._tick)
            return
        if remaining_ns > 0:
            time.sleep(remaining_ns / 1e9)
        now_ns = time.monotonic_ns()
        stats = self.stats
        for engine in self.engines:
            while (step := engine.advance(now_ns)) is not None:
                batch = step.batch
                end_ns = step.end_ns
                self._account(step.start_ns, end_ns, batch, step.admitted, step.prefill_tokens)
                for seq in batch:
                    seq.listener.on_token(seq, end_ns)
                stats.steps += 1
        self._check_lag(at_ns)
        self._arm()

    def _check_lag(self, scheduled_ns: int) -> None:
        """The engine never slips its schedule, so a starved process shows up as tokens written late."""
        now_ns = time.monotonic_ns()
        lag_ns = now_ns - scheduled_ns
        if lag_ns > _LAG_WARN_NS and now_ns - self._warned_ns > 10_000_000_000:
            self._warned_ns = now_ns
            log.warning(
                "simulator is %.0f ms behind its schedule: it is short of CPU, so latencies measured now "
                "include its own delay (ground truth at /sim/requests shows how much)",
                lag_ns / 1e6,
            )

    def _account(self, start_ns: int, end_ns: int, batch: list[Sequence], admitted: int, prefill: int) -> None:
        stats = self.stats
        n = len(batch)
        step_s = (end_ns - start_ns) / 1e9
        stats.generation_tokens += n
        stats.busy_slot_sum += n
        prefill_s = prefill / self.profile.prefill_tokens_per_s
        stats.prompt_seconds += prefill_s
        stats.decode_seconds += step_s - prefill_s
        first = resumed = 0
        for seq in batch[n - admitted :] if admitted else ():
            if seq.emitted == 1 and seq.first_token_ns is not None:
                stats.ttft_s.observe((seq.first_token_ns - seq.arrived_ns) / 1e9)
                stats.prompt_tokens += seq.prompt_tokens  # as vLLM counts them: once, cached or not
                first += 1
            elif seq.previous_token_ns is not None:  # preempted, then recomputed: the gap spans the wait
                stats.itl_s.observe((end_ns - seq.previous_token_ns) / 1e9)
                resumed += 1
        if n > first + resumed:
            stats.itl_s.observe(step_s, n - first - resumed)


@dataclass(frozen=True, slots=True)
class Call:
    """A request an API layer accepted, as every :class:`Exchange` starts from it."""

    server: SimServer
    response: Response
    truth: RequestTruth
    stream: bool
    fault: FaultKind | None
    """The fault drawn for the request (one that strikes mid-stream is dropped for a whole response)."""
    chat: bool
    """A chat request (messages), else a completion (prompt)."""
    model: str
    """The model as the request named it."""


class Exchange:
    """One request's answer: subclasses render tokens in their wire format; this class does the rest."""

    ndjson = False
    """Whether the malformed chunk is an NDJSON line (else an SSE event)."""

    def __init__(self, call: Call) -> None:
        self.server = call.server
        self.response = call.response
        self.truth = call.truth
        self.stream = call.stream
        self.chat = call.chat
        self.model = call.model
        fault = call.fault
        self.fault = fault if call.stream or fault is None or not fault.mid_stream else None
        call.truth.fault = self.fault.value if self.fault else None
        self.seq: Sequence | None = None
        self.engine: Engine | None = None
        """The replica running this request (set by :meth:`Runtime.submit`)."""
        self._fault_at = -1
        self._held: list[bytes] | None = None
        self._finish_held = False
        self._headers: dict[str, str] = {}

    # --- format hooks ------------------------------------------------------------------------------
    def token_bytes(self, seq: Sequence, scheduled_ns: int) -> bytes:
        """The streamed chunk carrying the token just produced (``seq.emitted`` is its 1-based index)."""
        raise NotImplementedError

    def final_chunks(self, seq: Sequence) -> list[bytes]:
        """Chunks after the last token: final object, usage, [DONE]."""
        raise NotImplementedError

    def whole_body(self, seq: Sequence) -> bytes:
        """The complete non-streaming response body."""
        raise NotImplementedError

    # --- lifecycle ---------------------------------------------------------------------------------
    def begin(self, seq: Sequence, content_type: str, headers: dict[str, str]) -> None:
        """Attach to the engine's sequence and, when streaming, send the response head."""
        self.seq = seq
        self._headers = headers
        self.truth.stream = self.stream
        self.truth.prompt_tokens = seq.prompt_tokens
        self.response.on_disconnect = self._disconnected
        if self.fault is not None and self.fault is not FaultKind.TRUNCATE:
            self._fault_at = min(self.server.profile.faults.after_tokens, seq.target_tokens - 1)
        if self.stream:
            self.response.start(200, content_type, headers)

    def on_token(self, seq: Sequence, scheduled_ns: int) -> None:
        """Hot path: called by the engine loop for every token of every stream."""
        truth = self.truth
        if self._fault_at == seq.emitted - 1:
            self._fault_at = -1
            if not self._strike(seq):
                return
        truth.token_scheduled_ns.append(scheduled_ns)
        if self.stream:
            data = self.token_bytes(seq, scheduled_ns)
            if self._held is not None:
                self._held.append(data)
            else:
                truth.token_written_ns.append(time.monotonic_ns())
                self.response.chunk(data)
        if seq.finished_ns is not None:
            self._finish(seq)

    def _strike(self, seq: Sequence) -> bool:
        """Play the mid-stream fault; returns whether the stream goes on."""
        if self.fault is FaultKind.RESET:
            self.truth.outcome = "reset"
            self._cancel()
            self.response.reset()
            self._close()
            return False
        if self.fault is FaultKind.MALFORMED:
            self.truth.outcome = "malformed"
            bad = b'{"model": "' if self.ndjson else b'data: {"choices": [{"delta": {"content": '
            self.response.chunk(bad + b"\n" if self.ndjson else bad + b"\n\n")
        elif self.fault is FaultKind.STALL:
            self.truth.outcome = "stall"
            self._held = []
            asyncio.get_running_loop().call_later(self.server.profile.faults.stall_s, self._release)
        return True

    def _release(self) -> None:
        held, self._held = self._held or [], None
        if not self.response.open:
            return
        for data in held:
            self.truth.token_written_ns.append(time.monotonic_ns())
            self.response.chunk(data)
        if self._finish_held and self.seq is not None:
            self._finish(self.seq)

    def _finish(self, seq: Sequence) -> None:
        if self._held is not None:
            self._finish_held = True
            return
        truth = self.truth
        truth.completion_tokens = seq.emitted
        truth.finish_reason = seq.finish_reason
        truth.admitted_ns = seq.admitted_ns
        stats = self.server.runtime.stats
        stats.finished[seq.finish_reason] = stats.finished.get(seq.finish_reason, 0) + 1
        stats.e2e_s.observe((time.monotonic_ns() - truth.arrived_ns) / 1e9)
        stats.observe_phases(seq)
        if self.stream:
            if self.fault is FaultKind.TRUNCATE:
                truth.outcome = "truncate"
            else:
                for data in self.final_chunks(seq):
                    self.response.chunk(data)
            self.response.end()
        else:
            truth.token_written_ns.extend([time.monotonic_ns()] * seq.emitted)
            self.response.send(200, self.whole_body(seq), "application/json", self._headers)
        self._close()

    def _close(self) -> None:
        truth = self.truth
        if truth.token_written_ns:
            truth.first_token_ns = truth.token_written_ns[0]
        self.server.truth.close(truth, time.monotonic_ns())

    def _cancel(self) -> None:
        if self.engine is not None and self.seq is not None:
            self.engine.cancel(self.seq)

    def _disconnected(self) -> None:
        self._cancel()
        self.truth.outcome = "disconnected"
        self._close()
