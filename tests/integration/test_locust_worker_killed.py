"""A Locust worker killed mid-run: the master notices, the run goes on, the step says it lost a worker
and the users left, what it stored stays, and ``stampede replay`` delivers the rows its journal held,
so every request the server finished before the kill is stored."""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from stampede.db import upgrade
from stampede.demo import start_simulator
from stampede.locust_launch import locustfiles
from stampede.processes import free_port, stop
from stampede.schema import Request, Run, Step

REPO = Path(__file__).resolve().parents[2]

STEP_S = 16
KILL_AFTER_S = 4


def stored_pids(db_url: str) -> set[int]:
    """The processes whose records are stored so far (none while the schema is being made)."""
    engine = create_engine(db_url)
    try:
        with Session(engine) as session:
            return set(session.scalars(select(Request.pid).distinct()))
    except OperationalError:
        return set()
    finally:
        engine.dispose()


def test_a_killed_worker_leaves_its_stored_records_and_the_run_finishes(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/r.db"
    upgrade(db_url)
    # TMPDIR: the killed worker's journal lands here, and replay looks for it here.
    env = {"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    chat, steps = locustfiles().split(",")
    port, sim_port = free_port(), free_port()
    simulator = start_simulator("vllm", sim_port, tmp_path / "sim.log")
    log = (tmp_path / "master.log").open("w")
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            f"{chat},{steps}",
            "--master",
            "--headless",
            "--expect-workers",
            "2",
            "--master-bind-port",
            str(port),
            "--host",
            f"http://127.0.0.1:{sim_port}",
            "--steps",
            "4",
            "--step-duration-s",
            str(STEP_S),
            "--max-tokens",
            "16",
            "--stop-timeout",
            "20s",
            "--exit-code-on-error",
            "0",
            "OpenAIChatUser",
        ],  # fmt: skip
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", chat, "--worker", "--master-port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    try:
        # Killed once both workers run the step (their first records are stored), KILL_AFTER_S into it.
        deadline = time.monotonic() + 60
        while {w.pid for w in workers} - stored_pids(db_url):
            assert time.monotonic() < deadline, "the workers did not both start sending"
            time.sleep(0.2)
        time.sleep(KILL_AFTER_S)
        killed_at, killed_ns = datetime.now(UTC), time.monotonic_ns()
        workers[0].send_signal(signal.SIGKILL)
        assert master.wait(timeout=STEP_S + 60) == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/sim/requests", timeout=30) as answer:
            truth = json.load(answer)["requests"]
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
                process.wait()
        stop(simulator)
        log.close()

    with Session(create_engine(db_url)) as session:
        run = session.scalars(select(Run)).one()
        step = session.scalars(select(Step)).one()
        by_pid = dict(session.execute(select(Request.pid, func.max(Request.started_at)).group_by(Request.pid)).all())
    assert run.status == "finished"
    assert len(by_pid) == 2
    killed_pid, survivor_pid = workers[0].pid, workers[1].pid
    last_of_killed = by_pid[killed_pid].replace(tzinfo=UTC)
    last_of_survivor = by_pid[survivor_pid].replace(tzinfo=UTC)
    # The killed worker's records up to about its last flush (1 s) before the kill are stored ...
    assert killed_at - timedelta(seconds=3) < last_of_killed <= killed_at
    # ... and the run went on without it.
    assert last_of_survivor > killed_at + timedelta(seconds=3)
    assert "missing" in (tmp_path / "master.log").read_text()
    # The step says so: planned 4 users, 2 left on the surviving worker, lost a few heartbeats after the kill.
    assert (step.users, step.lost_workers, step.users_left) == (4, 1, 2)
    assert step.lost_at is not None
    assert killed_at < step.lost_at.replace(tzinfo=UTC) < killed_at + timedelta(seconds=8)
    report = subprocess.run(
        [sys.executable, "-m", "stampede", "report"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert "lost 1 Locust worker(s)" in report.stdout and "2 of 4 users left" in report.stdout, report.stdout

    # What the killed worker held in memory is in its journal (nothing, if it was killed just after a
    # flush); replay finds it as a dead process's.
    left = list(tmp_path.glob(f"stampede-journal-{killed_pid}-*.rows"))
    replay = subprocess.run(
        [sys.executable, "-m", "loadgen.replay"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert replay.returncode == 0, replay.stderr
    assert not any(p.exists() for p in left)
    with Session(create_engine(db_url)) as session:
        stored = set(session.scalars(select(Request.server_request_id)).all())
    # Every request the server finished half a second before the kill had reached its client, so
    # it is stored, whichever worker sent it (the sink alone, flushing each second, would miss some).
    finished_before = {str(r["id"]) for r in truth if r["finished_ns"] and r["finished_ns"] < killed_ns - 500_000_000}
    assert finished_before and finished_before <= stored
