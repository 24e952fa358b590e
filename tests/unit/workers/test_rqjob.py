"""StampedeJob writes back the compressed arguments it read instead of compressing them again, and
still compresses arguments that changed. No Redis: jobs go through RQ's own hash form in memory."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from redis import Redis
from rq import job as rq_job
from rq.job import Job
from rq.serializers import JSONSerializer

from workers.rqjob import StampedeJob

CONNECTION = Redis(host="127.0.0.1", port=1)  # never used: nothing here talks to Redis
BATCH = [{"id": str(i), "error": None} for i in range(200)]


def as_redis_stores(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str.encode(value) if isinstance(value, str) else str(value).encode()  # str enums by value


def stored_hash() -> dict[bytes, bytes]:
    """A job's Redis hash, as RQ writes it on enqueue."""
    job = Job.create("workers.jobs.store_request_rows", args=(BATCH,), connection=CONNECTION, serializer=JSONSerializer)
    return {k.encode(): as_redis_stores(v) for k, v in job.to_dict().items()}


def loaded(raw: dict[bytes, bytes]) -> StampedeJob:
    job = StampedeJob("job-1", connection=CONNECTION, serializer=JSONSerializer)
    job.restore(raw)
    return job


def test_saving_an_unchanged_job_reuses_its_compressed_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = stored_hash()
    job = loaded(raw)
    assert list(job.args) == [BATCH]  # as a worker reads them before running the job
    compressed: list[int] = []
    real = zlib.compress
    monkeypatch.setattr(rq_job.zlib, "compress", lambda data, *a: compressed.append(len(data)) or real(data, *a))
    fields = job.to_dict()
    assert fields["data"] is raw[b"data"]
    assert max(compressed, default=0) < 100  # only the empty stand-in, not the batch
    assert job.data == zlib.decompress(raw[b"data"])  # the job itself is untouched


def test_changed_arguments_are_compressed_again() -> None:
    job = loaded(stored_hash())
    assert job.func_name == "workers.jobs.store_request_rows"
    job.args = ([{"id": "other"}],)
    assert JSONSerializer.loads(zlib.decompress(job.to_dict()["data"]))[2] == [[{"id": "other"}]]
