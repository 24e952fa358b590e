"""Database schema (SQLAlchemy 2.0 declarative); every change goes through an Alembic revision.

Request rows carry no foreign key to their run: in fleet mode batches reach PostgreSQL through
several RQ workers in any order, so a request may be stored before its run row is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, MetaData, String, UniqueConstraint, Uuid
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


class Step(Base):
    """A load step of a run against one target."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "target", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    target: Mapped[str] = mapped_column(String(200))
    index: Mapped[int]
    users: Mapped[int]
    api: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str] = mapped_column(String(500))
    started_at: Mapped[datetime]
    warmup_s: Mapped[float]
    ended_at: Mapped[datetime | None]


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
    error: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[datetime]
    ttft_ms: Mapped[float | None]
    e2e_ms: Mapped[float]
    tpot_ms: Mapped[float | None]
    prompt_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    output_chunks: Mapped[int]
    chunk_offsets_ns: Mapped[list[int]] = mapped_column(JSON)
