"""What a user sees when a sweep cannot start."""

import subprocess
import sys
import time

from stampede.processes import free_port


def stampede(*args: str, env_db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stampede", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"STAMPEDE_DATABASE_URL": env_db, "PATH": "/usr/bin:/bin"},
    )


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
    assert "steps: Value error, every step needs at least one user" in result.stderr
    assert "targets.0.model: Field required" in result.stderr
