"""Database schema (SQLAlchemy 2.0 declarative); every change goes through an Alembic revision.

Request rows carry no foreign key to their run: in fleet mode batches reach PostgreSQL through
several RQ workers in any order, so a request may be stored before its run row is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, MetaData, String, UniqueConstraint, Uuid, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Run(Base):
    """One sweep or Locust test."""

    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    config: Mapped[dict[str, Any]]
    accepted: Mapped[bool] = mapped_column(server_default=false())
    baseline_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    regression: Mapped[bool | None]
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, server_default="[]")


class Step(Base):
    """A load step of a run against one target."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "target", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    target: Mapped[str] = mapped_column(String(200))
    index: Mapped[int]
    users: Mapped[int]
    request_rate_per_s: Mapped[float | None]
    api: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str] = mapped_column(String(500))
    started_at: Mapped[datetime]
    warmup_s: Mapped[float]
    ended_at: Mapped[datetime | None]
    window_opened_at: Mapped[datetime | None]
    """When the measured window opened (by state, then ``warmup_s``); set by the first summary of the
    ended step, so every later report uses the same window."""
    load_reached: Mapped[bool | None]
    """The window opened by state; False when the planned load never held and the clock opened it."""
    lost_workers: Mapped[int] = mapped_column(server_default="0")
    lost_at: Mapped[datetime | None]
    users_left: Mapped[int | None]


class Request(Base):
    """One request sent to a target; one row per request, whatever its outcome."""

    __tablename__ = "requests"
    __table_args__ = (Index(None, "run_id", "target", "step_index"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    target: Mapped[str] = mapped_column(String(200))
    step_index: Mapped[int]
    in_warmup: Mapped[bool]
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    api: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    prompt_id: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))
    http_status: Mapped[int | None]
    server_request_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[datetime]
    ttft_ms: Mapped[float | None]
    e2e_ms: Mapped[float]
    tpot_ms: Mapped[float | None]
    prompt_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    output_chunks: Mapped[int]
    chunk_offsets_ns: Mapped[list[int]] = mapped_column(JSON)
    chunk_tokens: Mapped[list[int]] = mapped_column(JSON, server_default="[]")
    client_output_tokens: Mapped[int | None]
    server_timings_ms: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    send_delay_ms: Mapped[float] = mapped_column(server_default="0")
    response_ms: Mapped[float | None]
    tokens_disagree: Mapped[bool] = mapped_column(server_default=false())
    late_chunks: Mapped[list[int]] = mapped_column(JSON, server_default="[]")
    reconnects: Mapped[int] = mapped_column(server_default="0")


class StepStats(Base):
    """A step's summary, cached once its requests are stored, so big runs report without rescanning."""

    __tablename__ = "step_stats"
    __table_args__ = (UniqueConstraint("run_id", "target", "step_index"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    target: Mapped[str] = mapped_column(String(200))
    step_index: Mapped[int]
    request_rows: Mapped[int]
    computed_at: Mapped[datetime]
    summary: Mapped[dict[str, Any]]


class GpuSample(Base):
    """One NVML reading of one GPU."""

    __tablename__ = "gpu_samples"
    __table_args__ = (Index(None, "run_id", "sampled_at"), Index(None, "host", "sampled_at"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    host: Mapped[str] = mapped_column(String(255))
    sampled_at: Mapped[datetime]
    gpu_index: Mapped[int]
    gpu_uuid: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    utilization_pct: Mapped[float | None]
    memory_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    power_w: Mapped[float | None]
    temperature_c: Mapped[float | None]
    sm_clock_mhz: Mapped[float | None]
    processes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class RuntimeSample(Base):
    """One value scraped from a runtime (vLLM or llama.cpp /metrics, Ollama /api/ps)."""

    __tablename__ = "runtime_samples"
    __table_args__ = (Index(None, "run_id", "target", "sampled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    target: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    sampled_at: Mapped[datetime]
    metric: Mapped[str] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]]
    value: Mapped[float]


class LoadgenCount(Base):
    """Request records a load-generating process made for a step: a step holding fewer rows is incomplete."""

    __tablename__ = "loadgen_counts"
    __table_args__ = (UniqueConstraint("run_id", "target", "step_index", "host", "pid"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    target: Mapped[str] = mapped_column(String(200))
    step_index: Mapped[int]
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    requests: Mapped[int]


class LoadgenSample(Base):
    """One reading of a load-generating process's own health (CPU, event-loop lag)."""

    __tablename__ = "loadgen_samples"
    __table_args__ = (Index(None, "run_id", "target", "step_index"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    target: Mapped[str] = mapped_column(String(200))
    step_index: Mapped[int]
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    sampled_at: Mapped[datetime]
    cpu_pct: Mapped[float]
    loop_lag_ms: Mapped[float]


class Schedule(Base):
    """A sweep to run on the worker fleet on a cron expression."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    cron: Mapped[str] = mapped_column(String(100))
    sweep: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
