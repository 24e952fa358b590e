"""Drives the pure engine on the event loop with ONE timer, and streams each step's tokens to clients.

The timer is armed about a millisecond before the step's scheduled end (event-loop timers have ms
granularity) and the last fraction is slept, so tokens leave at their scheduled time rather than up to a
millisecond late. Each :class:`Exchange` renders one response in its wire format, records ground truth
and plays its fault.
"""

from __future__ import annotations

import asyncio
import time
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
"""Wake this much before a step ends; the remainder is slept precisely."""


class Runtime:
    """One engine, one timer, and the per-step bookkeeping (stats, token fan-out)."""

    def __init__(self, profile: Profile, truth: TruthLog) -> None:
        self.engine = Engine(profile)
        self.stats = Stats()
        self.truth = truth
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ns: int | None = None

    def submit(self, prompt_tokens: int, max_tokens: int | None, ignore_eos: bool, exchange: Exchange) -> Sequence:
        """Queue a request in the engine; raises the engine's QueueFullError / ContextLengthError."""
        seq = self.engine.submit(prompt_tokens, max_tokens, time.monotonic_ns(), ignore_eos)
        seq.listener = exchange
        self._arm()
        return seq

    def cancel(self, seq: Sequence) -> None:
        self.engine.cancel(seq)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        at_ns = self.engine.next_event_ns()
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
        at_ns = self.engine.next_event_ns()
        now_ns = time.monotonic_ns()
        if at_ns is not None and at_ns > now_ns:
            time.sleep((at_ns - now_ns) / 1e9)
            now_ns = time.monotonic_ns()
        stats = self.stats
        while (step := self.engine.advance(now_ns)) is not None:
            batch = step.batch
            end_ns = step.end_ns
            self._account(step.start_ns, end_ns, batch, step.admitted, step.prefill_tokens)
            for seq in batch:
                seq.listener.on_token(seq, end_ns)
            stats.steps += 1
        self._arm()

    def _account(self, start_ns: int, end_ns: int, batch: list[Sequence], admitted: int, prefill: int) -> None:
        stats = self.stats
        n = len(batch)
        step_s = (end_ns - start_ns) / 1e9
        stats.generation_tokens += n
        stats.busy_slot_sum += n
        stats.prompt_tokens += prefill
        prefill_s = prefill / self.engine.profile.prefill_tokens_per_s
        stats.prompt_seconds += prefill_s
        stats.decode_seconds += step_s - prefill_s
        first = 0
        for seq in batch[n - admitted :] if admitted else ():
            if seq.emitted == 1 and seq.first_token_ns is not None:
                stats.ttft_s.observe((seq.first_token_ns - seq.arrived_ns) / 1e9)
                first += 1
        if n > first:
            stats.tpot_s.observe(step_s, n - first)


class Exchange:
    """One request's answer: subclasses render tokens in their wire format; this class does the rest."""

    ndjson = False
    """Whether the malformed chunk is an NDJSON line (else an SSE event)."""

    def __init__(
        self,
        server: SimServer,
        response: Response,
        truth: RequestTruth,
        stream: bool,
        fault: FaultKind | None,
    ) -> None:
        self.server = server
        self.response = response
        self.truth = truth
        self.stream = stream
        self.fault = fault if stream or fault is None or not fault.mid_stream else None
        truth.fault = self.fault.value if self.fault else None
        self.seq: Sequence | None = None
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
        if self._fault_at == len(truth.token_scheduled_ns):
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
            self.server.runtime.cancel(seq)
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
        self.server.runtime.stats.finished[seq.finish_reason] = (
            self.server.runtime.stats.finished.get(seq.finish_reason, 0) + 1
        )
        self.server.runtime.stats.e2e_s.observe((time.monotonic_ns() - truth.arrived_ns) / 1e9)
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

    def _disconnected(self) -> None:
        if self.seq is not None:
            self.server.runtime.cancel(self.seq)
        self.truth.outcome = "disconnected"
        self._close()
