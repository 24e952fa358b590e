"""A plain ``rq worker`` (RQ's own command, JSON serializer) stores what the RQ sink enqueues, as RQ
runs it by default (forked jobs, RQ's job class) and as docs/fleet.md gives it (jobs in the worker
process, our job class): the jobs need nothing of ``python -m workers``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.rq_sink import RQSink
from tests.integration.fleet_helpers import produce, stored_requests

pytest_plugins = ["tests.integration.fleet_fixtures"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


DOCUMENTED = ["--worker-class", "rq.SimpleWorker", "--job-class", "workers.rqjob.StampedeJob"]


@pytest.mark.parametrize("classes", [[], DOCUMENTED], ids=["rq-defaults", "documented"])
def test_plain_rq_worker_stores_the_batches(pg_url, shared_redis, queue_name, classes: list[str]) -> None:
    sink = RQSink(shared_redis, queue_name, 200, 0.1)
    produce(sink, 1000)
    assert sink.close(timeout_s=10)
    rq = Path(sys.executable).with_name("rq")
    command = [str(rq), "worker", "--burst", "--with-scheduler", "--serializer", "rq.serializers.JSONSerializer"]
    command += [*classes, "--url", shared_redis, "--name", f"{queue_name}-rq", queue_name]
    result = subprocess.run(
        command,
        env={**os.environ, "STAMPEDE_DATABASE_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=45,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert stored_requests(pg_url) == 1000
