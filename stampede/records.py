"""Records that cross a process boundary: one per request sent, per run and per load step.

Clients fill in raw measurements (a wall-clock start for aligning hosts, monotonic offsets for every
duration); derived values are computed fields, calculated by :mod:`stampede.metrics` in one place.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

from stampede import metrics


class Outcome(str, Enum):
    """How a request ended."""

    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TRUNCATED = "truncated"
    INVALID_STREAM = "invalid_stream"
    CONNECTION_ERROR = "connection_error"
    CANCELLED = "cancelled"
    """Still running when the load stopped (Locust killed its user): the chunks that came are kept."""
    ABORTED = "aborted"
    """The server ended the stream properly but before the request finished: it gave up on it (llama-cpp-python's
    server stops the running stream when a newer request arrives). Not a cut connection: that is ``truncated``."""


class Api(str, Enum):
    """The wire protocol a request used."""

    OLLAMA_CHAT = "ollama_chat"
    OPENAI_CHAT = "openai_chat"


class RunStatus(str, Enum):
    """Lifecycle of a run."""

    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    """Ended before its last load step (Ctrl-C, SIGTERM, a stopped sweep); the steps it ran are stored."""
    FAILED = "failed"


def uuid7() -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48 bits of Unix time in ms, the version, 12 random bits, the
    variant, 62 random bits. Request ids made in time order are inserted at the end of the primary
    key's index instead of all over it, which stores them faster (docs/benchmarks.md, "Ingest")."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = (rand >> 62) & 0xFFF, rand & ((1 << 62) - 1)
    return uuid.UUID(int=(unix_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_job_arg(self) -> dict[str, Any]:
        """The JSON-able form a job receives: raw fields only, derived ones are recomputed on arrival."""
        return self.model_dump(mode="json", exclude_computed_fields=True)


class RequestRecord(_Record):
    """One request sent to a target, as the client measured it."""

    id: uuid.UUID = Field(
        default_factory=uuid7, description="Unique id, time-ordered (UUIDv7); makes stores idempotent."
    )
    run_id: uuid.UUID = Field(description="Run this request belongs to.")
    target: str = Field(description="Label of the target runtime (e.g. 'ollama-like').")
    step_index: int = Field(ge=0, description="Load step that was active when the request was sent.")
    in_warmup: bool = Field(
        description="Sent within --warmup-s of the step's start, by the sending process's clock; a step's figures"
        " use its measured window instead (docs/metrics.md, 'Per step')."
    )
    host: str = Field(description="Hostname of the load-generating process.")
    pid: int = Field(description="Process id of the load-generating process.")
    api: Api = Field(description="Wire protocol used.")
    model: str = Field(description="Model name sent in the request.")
    prompt_id: str = Field(description="Identifier of the prompt within its prompt set.")
    outcome: Outcome = Field(description="How the request ended.")
    http_status: int | None = Field(default=None, description="HTTP status of the response, if one came.")
    server_request_id: str | None = Field(
        default=None, description="The server's id for the request (X-Request-Id), to match server logs."
    )
    error: str | None = Field(default=None, description="Short error description for failed requests.")
    started_at: AwareDatetime = Field(description="Wall-clock UTC time the request was sent; bucketing only.")
    chunk_offsets_ns: list[int] = Field(
        default_factory=list,
        description="Monotonic ns from send to the arrival of each chunk that carried output text.",
    )
    late_chunks: list[int] = Field(
        default_factory=list,
        description="Indexes of output chunks whose read also took bytes that came after them (a later chunk,"
        " a keep-alive, part of a later line): timed at or after their arrival, by up to the gap (the kernel"
        " stamps segments that waited together as one).",
    )
    end_offset_ns: int = Field(ge=0, description="Monotonic ns from send to the end of the response.")
    prompt_tokens: int | None = Field(default=None, description="Prompt tokens as the server counted them.")
    output_tokens: int | None = Field(default=None, description="Output tokens as the server counted them.")
    chunk_tokens: list[int] = Field(
        default_factory=list,
        description="Tokens in each output chunk by the client's tokenizer; empty when none was used.",
    )
    client_output_tokens: int | None = Field(
        default=None, description="Output tokens by the client's tokenizer, when one was used."
    )
    server_timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="The server's own timings in ms: load_ms, prompt_eval_ms, eval_ms, total_ms (as reported).",
    )
    send_delay_ns: int = Field(
        default=0, ge=0, description="Monotonic ns from the intended send (open loop) to the actual send."
    )
    reconnects: int = Field(
        default=0,
        ge=0,
        description="Times the request was sent again on a new connection because the reused one had been"
        " closed before any byte of a response (the server never read it); timed from the last send.",
    )

    @computed_field(description="Time to first token, ms.")  # type: ignore[prop-decorator]  # pydantic wraps the property
    @property
    def ttft_ms(self) -> float | None:
        return metrics.ttft_ms(self.chunk_offsets_ns)

    @computed_field(description="End-to-end latency, ms.")  # type: ignore[prop-decorator]  # pydantic wraps the property
    @property
    def e2e_ms(self) -> float:
        return metrics.e2e_ms(self.end_offset_ns)

    @computed_field(description="Gaps between output chunks per token in the chunk, ms.")  # type: ignore[prop-decorator]  # pydantic wraps the property
    @property
    def itl_ms(self) -> list[float]:
        return metrics.itl_ms(self.chunk_offsets_ns, self.chunk_tokens)

    @computed_field(description="Latency from the intended send time, ms.")  # type: ignore[prop-decorator]  # pydantic wraps the property
    @property
    def response_ms(self) -> float:
        return metrics.response_ms(self.end_offset_ns, self.send_delay_ns)

    @computed_field(description="Server and client output token counts differ.")  # type: ignore[prop-decorator]  # pydantic wraps the property
    @property
    def tokens_disagree(self) -> bool:
        return metrics.tokens_disagree(self.output_tokens, self.client_output_tokens, len(self.chunk_offsets_ns))

    @computed_field(description="Time per output token after the first, ms.")  # type: ignore[prop-decorator]  # pydantic wraps the property
    @property
    def tpot_ms(self) -> float | None:
        tokens, _ = metrics.output_token_count(
            self.output_tokens, self.client_output_tokens, len(self.chunk_offsets_ns)
        )
        return metrics.tpot_ms(self.chunk_offsets_ns, self.end_offset_ns, tokens)


class RunRecord(_Record):
    """A run: one sweep or one Locust test, over one or more targets."""

    id: uuid.UUID = Field(description="Run id, shared by every process of the run.")
    name: str = Field(description="Human label for the run.")
    status: RunStatus = Field(description="Lifecycle state.")
    started_at: AwareDatetime = Field(description="Wall-clock UTC start.")
    ended_at: AwareDatetime | None = Field(default=None, description="Wall-clock UTC end, once ended.")
    config: dict[str, Any] = Field(default_factory=dict, description="Run options, secrets removed.")


class StepRecord(_Record):
    """A load step of a run for one target: a fixed number of users held for a while."""

    run_id: uuid.UUID = Field(description="Run this step belongs to.")
    target: str = Field(description="Label of the target runtime.")
    index: int = Field(ge=0, description="Position of the step in the run, from 0.")
    users: int = Field(ge=0, description="Concurrent users: the concurrency (closed loop) or in-flight cap (open).")
    request_rate_per_s: float | None = Field(
        default=None, description="Open loop: intended requests per second over all processes; None if closed."
    )
    api: Api = Field(description="Wire protocol used against the target.")
    model: str = Field(description="Model name requested.")
    base_url: str = Field(description="Target URL, credentials removed.")
    started_at: AwareDatetime = Field(description="Wall-clock UTC time the step began (master's clock).")
    warmup_s: float = Field(
        ge=0, description="Seconds after the load holds steady (or, if it never does, after the start) left out."
    )
    ended_at: AwareDatetime | None = Field(default=None, description="Wall-clock UTC end, once ended.")
    lost_workers: int = Field(
        default=0, ge=0, description="Locust workers that stopped reporting to the master during the step."
    )
    lost_at: AwareDatetime | None = Field(default=None, description="Wall-clock UTC time the first was found lost.")
    users_left: int | None = Field(
        default=None, description="Users the workers still reporting ran once the last loss was found."
    )


class LoadgenSampleRecord(_Record):
    """One reading of a load-generating process's own health."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id; makes stores idempotent.")
    run_id: uuid.UUID = Field(description="Run the process was generating load for.")
    target: str = Field(description="Label of the target runtime.")
    step_index: int = Field(ge=0, description="Step current in the process when sampled.")
    host: str = Field(description="Hostname of the process.")
    pid: int = Field(description="Process id.")
    sampled_at: AwareDatetime = Field(description="Wall-clock UTC end of the sampled interval.")
    cpu_pct: float = Field(ge=0, description="CPU time (user + system) over wall time in the interval, percent.")
    loop_lag_ms: float = Field(ge=0, description="Largest event-loop lag seen in the interval, ms.")


class LoadgenCountRecord(_Record):
    """How many request records one load-generating process made for one step: what the store must hold."""

    run_id: uuid.UUID = Field(description="Run the requests belong to.")
    target: str = Field(description="Label of the target runtime.")
    step_index: int = Field(ge=0, description="Step the requests were sent in.")
    host: str = Field(description="Hostname of the process.")
    pid: int = Field(description="Process id.")
    requests: int = Field(ge=0, description="Request records made so far, of any outcome.")


def utc_now() -> datetime:
    """Timezone-aware UTC now."""
    return datetime.now(UTC)


class StepMessage(_Record):
    """The current load step, as the coordinating Locust process tells every process (a custom message)."""

    run_id: uuid.UUID = Field(description="Run the step belongs to (workers learn it from here).")
    index: int = Field(ge=0, description="Step number, from 0.")
    warmup_s: float = Field(ge=0, description="Seconds from the step's start left out of its figures.")
    rate_per_s: float = Field(default=0.0, ge=0, description="Open loop: requests/s over all processes; 0: closed.")
    share: float = Field(default=1.0, gt=0, le=1, description="Share of the rate this process paces.")
    arrival: str = Field(pattern="^(constant|poisson|gamma)$", description="Distribution of open-loop gaps.")
    burstiness: float = Field(gt=0, description="Gamma arrivals: squared CV of the gaps (1 = Poisson).")
    seed: int = Field(description="The run's seed; each process draws its own gaps from it.")
