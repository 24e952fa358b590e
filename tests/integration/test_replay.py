"""`stampede replay` delivers what a sink spilled to a file, once, and refuses what is not a spill."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from loadgen.storejobs import STORE_REQUESTS, STORE_RUN
from stampede.db import upgrade
from stampede.records import RunRecord, RunStatus, utc_now
from stampede.rows import encode_batch
from stampede.schema import Request, Run
from tests.builders import request_record

REPO = Path(__file__).resolve().parents[2]


def replay(tmp_path: Path, db_url: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stampede", "replay", *map(str, files)],
        env={"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def counts(db_url: str) -> tuple[int, int]:
    with Session(create_engine(db_url)) as session:
        return (
            session.scalar(select(func.count()).select_from(Request)) or 0,
            session.scalar(select(func.count()).select_from(Run)) or 0,
        )


def test_a_spill_file_is_delivered_once_and_removed(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/r.db"
    upgrade(db_url)
    run_id = uuid.uuid4()
    run = RunRecord(id=run_id, name="spilled", status=RunStatus.FINISHED, started_at=utc_now())
    batches = [encode_batch(request_record(run_id=run_id) for _ in range(5)) for _ in range(3)]
    lines = [{"job": STORE_RUN, "arg": run.to_job_arg()}] + [{"job": STORE_REQUESTS, "arg": b} for b in batches]
    content = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    spill = tmp_path / "stampede-spill-1.jsonl"
    spill.write_bytes(content)

    result = replay(tmp_path, db_url, spill)
    assert result.returncode == 0, result.stderr
    assert "4 jobs delivered" in result.stdout and not spill.exists()
    assert counts(db_url) == (15, 1)

    spill.write_bytes(content)  # the same jobs again: stores ignore what they already hold
    assert replay(tmp_path, db_url, spill).returncode == 0
    assert counts(db_url) == (15, 1)


def test_a_file_that_is_not_a_spill_is_refused_and_kept(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/r.db"
    upgrade(db_url)
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"job": "workers.jobs.store_run"}\n')
    result = replay(tmp_path, db_url, bad)
    assert result.returncode == 2
    assert "notes.jsonl:1: not a spilled job" in result.stderr
    assert bad.exists()


# A Locust process's sink, killed once two full batches are stored and 500 records wait in memory.
KILLED_SINK = """
import sys, uuid
import gevent
from loadgen.sinks import make_sink
from stampede.settings import get_settings
from tests.builders import request_record
sink = make_sink(get_settings())
run_id = uuid.UUID(sys.argv[1])
for _ in range(4000):
    sink.add_request(request_record(run_id=run_id))
while sink.delivered_requests < 4000:
    gevent.sleep(0.05)
for _ in range(500):
    sink.add_request(request_record(run_id=run_id))
print("added", flush=True)
gevent.sleep(60)
"""


@pytest.mark.parametrize("named", [False, True], ids=["found", "named"])
def test_rows_of_a_killed_process_are_delivered_from_its_journal(tmp_path: Path, named: bool) -> None:
    db_url = f"sqlite:///{tmp_path}/r.db"
    upgrade(db_url)
    env = {
        "STAMPEDE_DATABASE_URL": db_url,
        "STAMPEDE_BATCH_SIZE": "2000",
        "STAMPEDE_FLUSH_INTERVAL_S": "60",
        "TMPDIR": str(tmp_path),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SINK, str(uuid.uuid4())],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"added\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert counts(db_url) == (4000, 0)  # two full batches of 2,000 had gone to the store

    # Named on the command line, or found: with none named, those of stopped processes.
    result = replay(tmp_path, db_url, *(sorted(tmp_path.glob("stampede-journal-*")) if named else []))
    assert result.returncode == 0, result.stderr
    assert counts(db_url) == (4500, 0)  # the other 500, and none of the 4,000 twice
    assert not list(tmp_path.glob("stampede-journal-*"))
    assert not list(tmp_path.glob("stampede-owner-*.lock"))  # the dead sink's lock file went with them
    assert "nothing left behind" in replay(tmp_path, db_url).stdout
