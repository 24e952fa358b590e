"""Dashboard benchmark: how long the Sweep page takes for a run of 1,000,000 request rows.

Seeds one run (2 targets x 10 steps, rows spread evenly, 16 output chunks each) straight into the
``requests`` table (SQLite: executemany; PostgreSQL: binary COPY, in a throwaway database created and
dropped here), then times the page with Streamlit's AppTest three times:

- **first**: nothing cached; every step is summarised from its rows and written to ``step_stats``;
- **cold**: a fresh page with Streamlit's caches cleared: summaries come from ``step_stats``;
- **warm**: the page again, Streamlit's ``st.cache_data`` holding the query results.

    python bench/dashboard_sweep_1m.py                       # SQLite in a temporary directory
    python bench/dashboard_sweep_1m.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import streamlit as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from stampede import rows as wire
from stampede import store
from stampede.db import get_engine, upgrade
from stampede.records import Api, RunRecord, RunStatus, StepRecord
from stampede.settings import get_settings

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
TARGETS = ("ollama-like", "vllm-like")
STEPS = 10
STEP_S = 60.0
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
CHUNKS = 16
NS_PER_MS = 1_000_000


def rows(run_id: uuid.UUID, total: int, uuid_as_hex: bool) -> Iterator[tuple[Any, ...]]:
    """Request rows in ``stampede.rows.REQUEST_COLUMNS`` order; latency grows with the step, varies by row."""
    per_step = total // (len(TARGETS) * STEPS)
    run = run_id.hex if uuid_as_hex else run_id
    for t, target in enumerate(TARGETS):
        for step in range(STEPS):
            for k in range(per_step):
                ttft_ns = (50 + 20 * step + 40 * t + k % 97) * NS_PER_MS
                gap_ns = (10 + step + k % 7) * NS_PER_MS
                offsets = [ttft_ns + i * gap_ns for i in range(CHUNKS)]
                e2e_ms = offsets[-1] / NS_PER_MS
                rid = uuid.uuid4()
                yield (
                    rid.hex if uuid_as_hex else rid, run, target, step, k < per_step // 10, f"loadgen-{k % 2}",
                    100 + k % 2, Api.OPENAI_CHAT.value, "m", "p", "ok" if k % 100 else "http_error",
                    200 if k % 100 else 503, None, None, T0 + timedelta(seconds=STEP_S * (step + k / per_step)),
                    ttft_ns / NS_PER_MS, e2e_ms, (e2e_ms - ttft_ns / NS_PER_MS) / (CHUNKS - 1), 20, CHUNKS, CHUNKS,
                    orjson.dumps(offsets).decode(), "[]", None, "{}", 0.0, e2e_ms, False,
                )  # fmt: skip


def seed(url: str, total: int) -> uuid.UUID:
    """Migrate ``url`` and write one finished run of ``total`` request rows."""
    upgrade(url)
    run_id = uuid.uuid4()
    engine = get_engine(url)
    with Session(engine) as session, session.begin():
        config = {"sweep": {"name": "bench", "slo": {"ttft_ms": 400}}}
        end = T0 + timedelta(seconds=STEP_S * STEPS)
        run = RunRecord(id=run_id, name="bench", status=RunStatus.FINISHED, started_at=T0, ended_at=end, config=config)
        store.upsert_run(session, run)
        for target in TARGETS:
            for step in range(STEPS):
                start = T0 + timedelta(seconds=STEP_S * step)
                store.upsert_step(
                    session,
                    StepRecord(
                        run_id=run_id, target=target, index=step, users=2**step, api=Api.OPENAI_CHAT, model="m",
                        base_url="http://127.0.0.1", started_at=start, warmup_s=6.0,
                        ended_at=start + timedelta(seconds=STEP_S),
                    ),
                )  # fmt: skip
    names = ", ".join(wire.REQUEST_COLUMNS)
    if engine.dialect.name == "sqlite":
        with sqlite3.connect(make_url(url).database or "") as conn:
            marks = ", ".join("?" * len(wire.REQUEST_COLUMNS))
            conn.executemany(f"INSERT INTO requests ({names}) VALUES ({marks})", rows(run_id, total, True))
    else:
        with engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY requests ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                # JSON values go as text: the binary form of ``json`` is its text.
                copy.set_types(["text" if t == "json" else t for t in wire.REQUEST_COLUMNS.values()])
                for row in rows(run_id, total, False):
                    copy.write_row(row)
            cursor.execute("ANALYZE requests")
    return run_id


def time_page(fresh: bool, at: AppTest | None = None) -> tuple[float, AppTest]:
    """Seconds for one run of the Sweep page; ``fresh`` clears Streamlit's caches and starts a new page."""
    if fresh or at is None:
        st.cache_data.clear()
        at = AppTest.from_file(APP, default_timeout=900)
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 5, "the Sweep page did not draw its charts"
    return elapsed, at


def bench(url: str, total: int) -> None:
    os.environ["STAMPEDE_DATABASE_URL"] = url
    get_settings.cache_clear()
    start = time.perf_counter()
    seed(url, total)
    print(f"seeded {total:,} rows in {time.perf_counter() - start:.1f} s")
    first, _ = time_page(fresh=True)
    cold, at = time_page(fresh=True)
    warm, _ = time_page(fresh=False, at=at)
    print(f"{get_engine(url).dialect.name}: first {first:.2f} s, cold {cold:.2f} s, warm {warm:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg-url", help="a PostgreSQL server to create a throwaway database on; SQLite if omitted")
    args = parser.parse_args()
    if args.pg_url is None:
        with tempfile.TemporaryDirectory() as tmp:
            bench(f"sqlite:///{tmp}/bench.db", args.rows)
        return
    name = f"stampede_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        bench(make_url(args.pg_url).set(database=name).render_as_string(hide_password=False), args.rows)
    finally:
        get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    main()
