"""Ingest benchmark: request records per second that one worker stores into PostgreSQL (or SQLite).

Two figures: the store path (the job function called directly with row batches as a sink makes
them: the batch's checks, COPY and commit) and the full RQ path (records added to the RQ sink a
Locust process uses, which encodes them and enqueues them in batches; then one
``python -m workers --burst`` process dequeues and stores them). It works in a throwaway database
and queue of its own and removes both afterwards.

    python bench/ingest.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/0 --records 200000 --batch-size 5000 --chunks 32

With ``--sqlite`` it measures the store path alone into a throwaway SQLite file: the embedded
store, where a Locust process's store child runs the same job function.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gevent
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from loadgen.journal import Journal
from loadgen.rq_sink import RQSink
from loadgen.sinkfiles import SinkFiles
from stampede.db import make_engine, upgrade
from stampede.records import Api, Outcome, RequestRecord
from stampede.rows import RowBatch, encode_batch, encode_request, row_batch
from stampede.schema import Request
from stampede.settings import Settings


def make_records(records: int, chunks: int, random_ids: bool = False) -> list[RequestRecord]:
    """Records shaped like a streamed chat run: ``chunks`` output chunks 20 ms apart; ids time-ordered
    as the client makes them, or random (version 4) for comparison."""
    run_id = uuid.uuid4()
    start = datetime.now(UTC)
    return [
        RequestRecord(
            **({"id": uuid.uuid4()} if random_ids else {}),
            run_id=run_id,
            target="vllm-like",
            step_index=i % 8,
            in_warmup=False,
            host="bench-host",
            pid=4242,
            api=Api.OPENAI_CHAT,
            model="llama3.1:8b",
            prompt_id=f"p{i % 100}",
            outcome=Outcome.OK,
            http_status=200,
            started_at=start + timedelta(milliseconds=i),
            chunk_offsets_ns=[150_000_000 + k * 20_000_000 + i % 997 for k in range(chunks)],
            end_offset_ns=150_000_000 + chunks * 20_000_000,
            prompt_tokens=120,
            output_tokens=chunks,
        )
        for i in range(records)
    ]


def make_batches(records: list[RequestRecord], batch_size: int) -> list[RowBatch]:
    """Job arguments as a Locust process's sink makes them."""
    return [encode_batch(records[i : i + batch_size]) for i in range(0, len(records), batch_size)]


def stored_rows(url: str) -> int:
    engine = make_engine(url)
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(Request)) or 0
    engine.dispose()
    return count


def truncate_requests(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE requests"))
    engine.dispose()


def bench_journal(records: list[RequestRecord], batch_size: int) -> float:
    """Microseconds per row that a sink's journal adds in the Locust process: the unbuffered write
    of each row, and a segment opened, sealed and removed per batch."""
    rows = [encode_request(r) for r in records]
    with tempfile.TemporaryDirectory() as directory:
        journal = Journal(SinkFiles("0-bench", Path(directory) / "spill.jsonl").segment)
        started = time.perf_counter()
        for i, row in enumerate(rows, start=1):
            journal.append(row)
            if i % batch_size == 0:
                Journal.discard(journal.seal())
        Journal.discard(journal.seal())
        return (time.perf_counter() - started) / len(rows) * 1e6


def bench_store(batches: list[RowBatch]) -> float:
    """Seconds to store every batch through the job function, in this process."""
    from workers import jobs

    jobs.store_request_rows(row_batch([]))  # connect outside the timing
    # A worker holds one batch at a time; the benchmark holds all of them, which would make every
    # full garbage collection walk the whole data set. Freezing it keeps the collector's work that of a worker.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for batch in batches:
        jobs.store_request_rows(batch)
    return time.perf_counter() - started


def bench_rq(records: list[RequestRecord], redis_url: str, batch_size: int, fork: bool) -> tuple[float, float, float]:
    """Seconds for an RQ sink to enqueue every record (encoding included), seconds the burst worker
    process ran, and seconds from the first job's start to the last one's end."""
    name = f"stampede-bench-{uuid.uuid4().hex[:8]}"
    connection = Redis.from_url(redis_url)
    try:
        sink = RQSink(redis_url, name, batch_size, flush_interval_s=1.0)
        started = time.perf_counter()
        for i, record in enumerate(records):
            sink.add_request(record)
            if i % batch_size == 0:
                gevent.sleep(0)  # a Locust process yields between requests; let the flusher run too
        assert sink.close(timeout_s=600), "the sink could not enqueue every batch"
        enqueue_s = time.perf_counter() - started

        command = [sys.executable, "-m", "workers", name, "--burst", "--log-level", "WARNING", "--name", name]
        started = time.perf_counter()
        subprocess.run(command + (["--fork"] if fork else []), check=True, timeout=600)
        worker_s = time.perf_counter() - started
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        finished = FinishedJobRegistry(queue=queue).get_job_ids()
        jobs = [j for j in Job.fetch_many(finished, connection=connection, serializer=JSONSerializer) if j]
        first = min(j.started_at for j in jobs if j.started_at)
        last = max(j.ended_at for j in jobs if j.ended_at)
        return enqueue_s, worker_s, (last - first).total_seconds()
    finally:
        for key in connection.scan_iter(match=f"*{name}*", count=1000):
            connection.delete(key)
        connection.srem("rq:workers", f"rq:worker:{name}")


def report_store(records: int, batches: list[RowBatch], url: str, chunks: int) -> None:
    print(f"{records} records, {len(batches)} batches of {batches[0]['count']}, {chunks} chunks each")
    store_s = bench_store(batches)
    assert stored_rows(url) == records, "store path lost or doubled rows"
    print(f"store path: {records / store_s:,.0f} records/s ({store_s:.2f} s)")


def bench_sqlite(records: int, batch_size: int, chunks: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/bench.db"
        upgrade(url)
        os.environ["STAMPEDE_DATABASE_URL"] = url
        report_store(records, make_batches(make_records(records, chunks), batch_size), url, chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--records", type=int, default=200_000)
    default_batch = Settings.model_fields["batch_size"].default
    parser.add_argument("--batch-size", type=int, default=default_batch, help="default: as STAMPEDE_BATCH_SIZE's")
    parser.add_argument("--chunks", type=int, default=32, help="output chunks per record")
    parser.add_argument("--fork", action="store_true", help="run the RQ worker with --fork (a forked process per job)")
    parser.add_argument("--random-ids", action="store_true", help="version-4 request ids, not UUIDv7")
    parser.add_argument("--sqlite", action="store_true", help="the store path into a throwaway SQLite file instead")
    args = parser.parse_args()
    if args.sqlite:
        bench_sqlite(args.records, args.batch_size, args.chunks)
        return

    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    database = f"stampede_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    url = make_url(args.pg_url).set(database=database).render_as_string(hide_password=False)
    try:
        upgrade(url)
        # Workers read the database from the environment, as in a fleet.
        os.environ["STAMPEDE_DATABASE_URL"] = url
        os.environ["STAMPEDE_REDIS_URL"] = args.redis_url
        records = make_records(args.records, args.chunks, args.random_ids)
        report_store(args.records, make_batches(records, args.batch_size), url, args.chunks)
        print(f"journal, per row in the Locust process: {bench_journal(records, args.batch_size):.2f} µs")

        truncate_requests(url)
        enqueue_s, worker_s, jobs_s = bench_rq(records, args.redis_url, args.batch_size, args.fork)
        assert stored_rows(url) == args.records, "RQ path lost or doubled rows"
        print(f"RQ sink, add_request to enqueued: {args.records / enqueue_s:,.0f} records/s ({enqueue_s:.2f} s)")
        print(f"RQ worker, first job start to last job end: {args.records / jobs_s:,.0f} records/s ({jobs_s:.2f} s)")
        print(f"RQ worker process, start to exit: {args.records / worker_s:,.0f} records/s ({worker_s:.2f} s)")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    main()
