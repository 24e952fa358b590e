"""Database reads for the views, cached by Streamlit: engines per process, query results for a few seconds.

Every function takes the database URL so that the cache is keyed by it, and returns plain data (data
frames, dataclasses) that Streamlit can pickle. Request rows are never loaded whole: pages get step
summaries (cached in ``step_stats``), SQL aggregates, or a bounded random sample.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pandas as pd
import streamlit as st
from sqlalchemy import Engine, Text, cast, func, inspect, select
from sqlalchemy.orm import Session

from stampede import metrics, report
from stampede.db import get_engine
from stampede.records import Outcome
from stampede.schema import GpuSample, LoadgenCount, LoadgenSample, Request, Run, RuntimeSample, Step
from stampede.settings import get_settings

# Short enough that a running sweep shows its new steps on the next refresh.
TTL_S = 5
RUN_COLUMNS = [
    "id", "name", "status", "started_at", "ended_at", "targets", "models", "steps", "hosts",
    "stored_requests", "produced_requests", "accepted", "regression", "baseline_run_id",
]  # fmt: skip


def database_url() -> str:
    """The URL of the configured results store."""
    return get_settings().database_url.get_secret_value()


@st.cache_resource
def engine(url: str) -> Engine:
    """The shared engine of this Streamlit process."""
    return get_engine(url)


@st.cache_data(ttl=TTL_S)
def runs(url: str) -> pd.DataFrame:
    """Every run, newest first, with its targets, models, step count and load-generating host count."""
    eng = engine(url)
    if not inspect(eng).has_table(Run.__tablename__):
        return pd.DataFrame(columns=RUN_COLUMNS)
    with Session(eng) as session:
        run_rows = session.execute(
            select(
                Run.id, Run.name, Run.status, Run.started_at, Run.ended_at,
                Run.accepted, Run.regression, Run.baseline_run_id,
            ).order_by(Run.started_at.desc())
        ).all()  # fmt: skip
        step_rows = session.execute(select(Step.run_id, Step.target, Step.model)).all()
        # Every load-generating process samples its own health, so this small table names every host;
        # counting hosts over request rows would scan millions of them.
        host_rows = session.execute(
            select(LoadgenSample.run_id, func.count(func.distinct(LoadgenSample.host))).group_by(LoadgenSample.run_id)
        ).all()
        # Rows per run come from the (run_id, ...) index; the counts from the small loadgen_counts table.
        stored = dict(session.execute(select(Request.run_id, func.count()).group_by(Request.run_id)).all())
        produced = dict(
            session.execute(
                select(LoadgenCount.run_id, func.sum(LoadgenCount.requests)).group_by(LoadgenCount.run_id)
            ).all()
        )
    targets: dict[uuid.UUID, set[str]] = {}
    models: dict[uuid.UUID, set[str]] = {}
    step_counts: dict[uuid.UUID, int] = {}
    for run_id, target, model in step_rows:
        targets.setdefault(run_id, set()).add(target)
        models.setdefault(run_id, set()).add(model)
        step_counts[run_id] = step_counts.get(run_id, 0) + 1
    hosts = dict(host_rows)
    frame = pd.DataFrame(
        [
            {
                "id": str(r.id),
                "name": r.name,
                "status": r.status,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "targets": ", ".join(sorted(targets.get(r.id, ()))),
                "models": ", ".join(sorted(models.get(r.id, ()))),
                "steps": step_counts.get(r.id, 0),
                "hosts": int(hosts.get(r.id, 0)),
                "stored_requests": int(stored.get(r.id, 0)),
                "produced_requests": None if r.id not in produced else int(produced[r.id]),
                "accepted": bool(r.accepted),
                "regression": r.regression,
                "baseline_run_id": None if r.baseline_run_id is None else str(r.baseline_run_id),
            }
            for r in run_rows
        ],
        columns=RUN_COLUMNS,
    )
    return frame


@st.cache_data(ttl=TTL_S)
def run_detail(url: str, run_id: str) -> dict[str, Any]:
    """A run's row as JSON-able data: status, times, config, regression verdict and findings."""
    with Session(engine(url)) as session:
        run = session.get(Run, uuid.UUID(run_id))
        assert run is not None
        return {
            "id": str(run.id),
            "name": run.name,
            "status": run.status,
            "started_at": run.started_at.isoformat(),
            "ended_at": None if run.ended_at is None else run.ended_at.isoformat(),
            "config": run.config,
            "accepted": run.accepted,
            "baseline_run_id": None if run.baseline_run_id is None else str(run.baseline_run_id),
            "regression": run.regression,
            "findings": run.findings,
        }


@st.cache_data(ttl=TTL_S)
def step_summaries(url: str, run_id: str) -> list[report.TargetStep]:
    """Summaries of a run's ended steps (cached in ``step_stats`` too, so only new steps are computed)."""
    with Session(engine(url)) as session, session.begin():
        return report.step_summaries(session, uuid.UUID(run_id))


def _run_rows(url: str, table: Any, columns: list[str], run_id: str, order_by: str | None = None) -> pd.DataFrame:
    """The ``columns`` of a table's rows that belong to a run, optionally ordered by one of them."""
    query = select(*(getattr(table, c) for c in columns)).where(table.run_id == uuid.UUID(run_id))
    if order_by is not None:
        query = query.order_by(getattr(table, order_by))
    with Session(engine(url)) as session:
        return pd.DataFrame(session.execute(query).all(), columns=columns)


@st.cache_data(ttl=TTL_S)
def steps(url: str, run_id: str) -> pd.DataFrame:
    """A run's steps: target, index, users, request rate, start and end (for bands on time charts)."""
    columns = ["target", "index", "users", "request_rate_per_s", "started_at", "ended_at"]
    return _run_rows(url, Step, columns, run_id).sort_values(["target", "index"], ignore_index=True)


@st.cache_data(ttl=TTL_S)
def request_sample(url: str, run_id: str, target: str | None, step: int | None, limit: int) -> pd.DataFrame:
    """At most ``limit`` request rows of a run (one target and step if given), drawn at random in SQL."""
    conditions = [Request.run_id == uuid.UUID(run_id)]
    if target is not None:
        conditions.append(Request.target == target)
    if step is not None:
        conditions.append(Request.step_index == step)
    columns = [
        Request.target, Request.step_index, Request.in_warmup, Request.started_at, Request.outcome,
        Request.http_status, Request.ttft_ms, Request.e2e_ms, Request.output_tokens, Request.host,
    ]  # fmt: skip
    stmt = select(*columns, cast(Request.server_timings_ms, Text).label("server_timings_ms")).where(*conditions)
    with Session(engine(url)) as session:
        total = session.scalar(select(func.count()).select_from(Request).where(*conditions)) or 0
        if total > limit:
            stmt = stmt.order_by(func.random()).limit(limit)
        frame = pd.DataFrame(session.execute(stmt).all(), columns=[*(c.key for c in columns), "server_timings_ms"])
    server = pd.json_normalize(frame["server_timings_ms"].map(orjson.loads).tolist()) if len(frame) else None
    for key in ("load_ms", "prompt_eval_ms", "eval_ms", "total_ms"):
        frame[key] = server[key] if server is not None and key in server else float("nan")
    frame["network_and_queue_ms"] = [
        metrics.network_and_queue_ms(e2e, None if pd.isna(total) else total)
        for e2e, total in zip(frame["e2e_ms"], frame["total_ms"], strict=True)
    ]
    frame["network_and_queue_ms"] = frame["network_and_queue_ms"].astype(float)
    frame.attrs["total"] = total
    return frame.drop(columns="server_timings_ms").sort_values("started_at", ignore_index=True)


@st.cache_data(ttl=TTL_S)
def outcomes(url: str, run_id: str) -> pd.DataFrame:
    """Request counts of a run by target, step, outcome and HTTP status (warm-up included)."""
    keys = [Request.target, Request.step_index, Request.outcome, Request.http_status]
    with Session(engine(url)) as session:
        rows = session.execute(
            select(*keys, func.count()).where(Request.run_id == uuid.UUID(run_id)).group_by(*keys)
        ).all()
    return pd.DataFrame(rows, columns=["target", "step_index", "outcome", "http_status", "requests"])


@st.cache_data(ttl=TTL_S)
def output_chunks(url: str, run_id: str) -> pd.DataFrame:
    """Output chunks of a run's successful measured requests by target and step: what ``late_chunks``
    counts among (warm-up left out, as in the step summaries)."""
    keys = [Request.target, Request.step_index]
    with Session(engine(url)) as session:
        rows = session.execute(
            select(*keys, func.sum(Request.output_chunks))
            .where(
                Request.run_id == uuid.UUID(run_id),
                Request.outcome == Outcome.OK.value,
                Request.in_warmup.is_(False),
            )
            .group_by(*keys)
        ).all()
    return pd.DataFrame(rows, columns=["target", "step", "chunks"])


@st.cache_data(ttl=TTL_S)
def gpu_samples(url: str, run_id: str) -> pd.DataFrame:
    """A run's GPU readings, by host and GPU, in time order."""
    columns = [
        "host", "gpu_index", "name", "sampled_at", "utilization_pct", "memory_used_bytes", "memory_total_bytes",
        "power_w", "temperature_c", "sm_clock_mhz",
    ]  # fmt: skip
    return _run_rows(url, GpuSample, columns, run_id, order_by="sampled_at")


@st.cache_data(ttl=TTL_S)
def runtime_samples(url: str, run_id: str) -> pd.DataFrame:
    """A run's scraped runtime values (metric, labels, value) by target and host, in time order."""
    columns = ["target", "host", "sampled_at", "metric", "labels", "value"]
    return _run_rows(url, RuntimeSample, columns, run_id, order_by="sampled_at")
