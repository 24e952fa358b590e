"""What a user sees when a sweep cannot start."""

import contextlib
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from simulator.profiles import Flavor, build_profile
from simulator.server import SimServer, serve_in_thread
from stampede.locust_launch import SweepError
from stampede.processes import free_port
from stampede.records import Api
from stampede.sweep import check_reachable
from stampede.sweepfile import TargetSpec


def stampede(*args: str, env_db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stampede", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"STAMPEDE_DATABASE_URL": env_db, "PATH": "/usr/bin:/bin"},
    )


def wait_for_a_stored_run(db_path, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Until the load is on: its run row is stored (the store starts up before any user)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "no run was stored"
        try:
            with sqlite3.connect(db_path) as db:
                if db.execute("SELECT count(*) FROM runs").fetchone()[0]:
                    return
        except sqlite3.OperationalError:  # no file or no tables yet
            pass
        time.sleep(0.2)


def test_unreachable_target_fails_fast_in_one_line(tmp_path) -> None:
    port = free_port()
    started = time.monotonic()
    result = stampede("sweep", "--host", f"http://127.0.0.1:{port}", env_db=f"sqlite:///{tmp_path}/x.db")
    assert time.monotonic() - started < 15
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach target"), result.stderr


def test_bad_steps_are_refused_before_any_load(tmp_path) -> None:
    result = stampede("sweep", "--host", "http://127.0.0.1:9", "--steps", "1,x", env_db=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2
    assert "--steps must be comma-separated numbers" in result.stderr


def test_a_sweep_file_with_mistakes_lists_them_all(tmp_path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('name = "x"\nsteps = [0]\n[[targets]]\nname = "a"\nurl = "http://127.0.0.1:9"\n')
    result = stampede("sweep", "--file", str(path), env_db=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2
    assert "steps: every step needs at least one user" in result.stderr
    assert "targets.0.model: Field required" in result.stderr


def test_mistakes_in_options_are_named_by_their_flags(tmp_path) -> None:
    options = ["--host", "127.0.0.1:9", "--warmup-s", "30", "--step-duration-s", "20", "--max-tokens", "0"]
    result = stampede("sweep", *options, env_db=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --host: needs its scheme, e.g. http://127.0.0.1:9; ")
    assert "--warmup-s: 30 s leaves nothing of a 20 s step to measure" in result.stderr
    assert "--max-tokens: Input should be greater than or equal to 1" in result.stderr
    # The run's and the target's names come from the host here: their mistake is the host's, said once.
    result = stampede("sweep", "--host", "http://", env_db=f"sqlite:///{tmp_path}/x.db")
    assert result.stderr.strip() == (
        "error: --host: String should have at least 1 character; --host: names no host: 'http://'"
    )


def test_the_reachability_probe_carries_the_api_key() -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, {}), api_key="sekret"))
    target = TargetSpec(name="vllm", url=sim.url, api=Api.OPENAI_CHAT, model="stampede-sim")
    try:
        check_reachable(target, "sekret")
        with pytest.raises(SweepError, match=r"refused access: HTTP 401 \(no key: set STAMPEDE_API_KEY\)"):
            check_reachable(target)
        with pytest.raises(SweepError, match=r"HTTP 401 \(the key in STAMPEDE_API_KEY\)"):
            check_reachable(target, "wrong")
    finally:
        sim.stop()


def test_a_terminated_sweep_stops_its_load(tmp_path) -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, {})))
    env = {"STAMPEDE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "stampede", "sweep", "--host", sim.url, "--steps", "1", "--step-duration-s", "60"]
    sweep = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        wait_for_a_stored_run(tmp_path / "x.db", sweep)
        children = psutil.Process(sweep.pid).children()
        time.sleep(1)  # more requests on the way
        sweep.terminate()
        _, stderr = sweep.communicate(timeout=30)
        assert sweep.returncode == 130
        assert "interrupted: run" in stderr and "stampede replay" in stderr
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
        # Locust shut down cleanly: the run is closed as stopped and every record it sent is stored, none journaled.
        with sqlite3.connect(tmp_path / "x.db") as db:
            assert db.execute("SELECT status FROM runs").fetchall() == [("stopped",)]
            assert db.execute("SELECT count(*) FROM requests").fetchone()[0] > 0
        assert list(tmp_path.glob("stampede-journal-*")) == []
    finally:
        if sweep.poll() is None:
            sweep.kill()
        sim.stop()


def test_a_sweep_where_every_request_failed_says_why_and_fails(tmp_path) -> None:
    sim = serve_in_thread(SimServer(build_profile(Flavor.VLLM, {})))
    try:
        args = ["--host", sim.url, "--model", "no-such-model", "--steps", "1", "--step-duration-s", "2"]
        result = stampede("sweep", *args, "--warmup-s", "0", env_db=f"sqlite:///{tmp_path}/x.db")
    finally:
        sim.stop()
    assert result.returncode == 2
    assert "requests failed: HTTP 404" in result.stderr and "no-such-model" in result.stderr, result.stderr
    assert "nothing was measured" in result.stderr


def test_a_new_sqlite_file_gets_its_tables_and_a_missing_database_is_one_line_not_a_traceback(tmp_path) -> None:
    fresh = stampede("report", env_db=f"sqlite:///{tmp_path}/fresh.db")
    assert fresh.returncode == 2
    # Before: "no tables yet: run `stampede db upgrade`"; a SQLite file is the user's, so it is made ready.
    assert fresh.stderr.strip().splitlines() == [
        "error: no runs stored yet: run `stampede demo` or `stampede sweep` first"
    ]
    missing = stampede(
        "schedule", "list", env_db="postgresql+psycopg://postgres:sekret@127.0.0.1:5432/stampede_nosuch_db"
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert 'database "stampede_nosuch_db" does not exist' in missing.stderr
    assert "sekret" not in missing.stderr and "postgres:***@" in missing.stderr


def test_a_missing_prompt_file_is_refused_before_any_load(tmp_path) -> None:
    args = ["--host", "http://127.0.0.1:9", "--prompt-set", f"jsonl:{tmp_path}/nope.jsonl"]
    result = stampede("sweep", *args, env_db=f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2
    path = tmp_path / "nope.jsonl"
    assert result.stderr.strip() == f"error: prompt file {path} not found (--prompt-set jsonl:{path})"


def test_report_of_a_run_that_is_not_there_says_so(tmp_path) -> None:
    db_url = f"sqlite:///{tmp_path}/x.db"
    assert stampede("db", "upgrade", env_db=db_url).returncode == 0
    result = stampede("report", "00000000-0000-0000-0000-000000000000", env_db=db_url)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no run 00000000-0000-0000-0000-000000000000 in {db_url}"


def test_a_terminated_demo_stops_its_simulators_and_load(tmp_path) -> None:
    env = {"STAMPEDE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "stampede", "demo", "--steps", "1", "--step-duration-s", "60", "--warmup-s", "1"]
    demo = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    children: list[psutil.Process] = []
    try:
        wait_for_a_stored_run(tmp_path / "x.db", demo)
        children = psutil.Process(demo.pid).children()
        time.sleep(1)  # more requests on the way
        commands = [" ".join(child.cmdline()) for child in children]
        demo.terminate()
        _, stderr = demo.communicate(timeout=30)
        assert demo.returncode == 130, stderr
        assert "interrupted: run" in stderr
        assert sum("-m simulator" in command for command in commands) == 2, commands
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
        with sqlite3.connect(tmp_path / "x.db") as db:
            assert db.execute("SELECT status FROM runs").fetchall() == [("stopped",)]
    finally:
        for process in [demo, *children]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
