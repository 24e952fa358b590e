"""The embedded store's child process: runs jobs, reports their errors, and comes back after dying."""

import os
import signal
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from loadgen.store_process import StoreProcess, StoreProcessError
from stampede.db import upgrade
from stampede.records import RunRecord, RunStatus, utc_now
from stampede.schema import Run

STORE_RUN = "workers.jobs.store_run"


@pytest.fixture
def store(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[StoreProcess, str]]:
    url = f"sqlite:///{tmp_path}/s.db"
    upgrade(url)
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", url)  # the child reads its settings from the environment
    process = StoreProcess()
    yield process, url
    process.stop()


def run_arg(name: str) -> dict[str, object]:
    return RunRecord(id=uuid.uuid4(), name=name, status=RunStatus.RUNNING, started_at=utc_now()).to_job_arg()


def stored_names(url: str) -> list[str]:
    with Session(create_engine(url)) as session:
        return list(session.scalars(select(Run.name).order_by(Run.name)))


def test_jobs_run_in_the_child_and_their_errors_come_back(store) -> None:
    process, url = store
    process.run(STORE_RUN, run_arg("a"))
    with pytest.raises(StoreProcessError, match="ValidationError"):
        process.run(STORE_RUN, {"id": "not a uuid"})
    process.run(STORE_RUN, run_arg("b"))  # the same child goes on after a refused job
    assert stored_names(url) == ["a", "b"]


def test_a_dead_child_fails_the_job_and_a_new_one_takes_the_next(store) -> None:
    process, url = store
    process.run(STORE_RUN, run_arg("a"))
    assert process._pid is not None
    os.kill(process._pid, signal.SIGKILL)
    with pytest.raises(StoreProcessError, match="store process lost"):
        process.run(STORE_RUN, run_arg("lost"))
    process.run(STORE_RUN, run_arg("b"))
    assert stored_names(url) == ["a", "b"]


def test_the_child_gives_way_to_the_load_generator(store) -> None:
    process, _ = store
    process.run(STORE_RUN, run_arg("a"))
    assert process._pid is not None
    assert os.getpriority(os.PRIO_PROCESS, process._pid) == 19
