"""`stampede schedule` and `stampede accept` from the command line."""

import subprocess
import sys
import uuid
from pathlib import Path

from stampede.db import upgrade

SWEEP = """name = "nightly"
steps = [1, 2]
[[targets]]
name = "vllm"
url = "http://127.0.0.1:8000"
model = "m"
"""


def stampede(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stampede", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"STAMPEDE_DATABASE_URL": f"sqlite:///{tmp_path}/s.db", "PATH": "/usr/bin:/bin"},
    )


def test_schedules_are_added_listed_and_removed(tmp_path: Path) -> None:
    upgrade(f"sqlite:///{tmp_path}/s.db")
    (tmp_path / "sweep.toml").write_text(SWEEP)
    added = stampede(
        tmp_path, "schedule", "add", "nightly", "--cron", "0 3 * * *", "--file", str(tmp_path / "sweep.toml")
    )
    assert added.returncode == 0, added.stderr
    listed = stampede(tmp_path, "schedule", "list")
    assert listed.stdout.split("\t")[:2] == ["nightly", "0 3 * * *"]
    assert stampede(tmp_path, "schedule", "remove", "nightly").returncode == 0
    assert stampede(tmp_path, "schedule", "list").stdout == ""
    gone = stampede(tmp_path, "schedule", "remove", "nightly")
    assert gone.returncode == 2 and "no schedule named 'nightly'" in gone.stderr


def test_a_bad_cron_expression_is_refused(tmp_path: Path) -> None:
    upgrade(f"sqlite:///{tmp_path}/s.db")
    (tmp_path / "sweep.toml").write_text(SWEEP)
    result = stampede(tmp_path, "schedule", "add", "x", "--cron", "every day", "--file", str(tmp_path / "sweep.toml"))
    assert result.returncode == 2 and "not a cron expression" in result.stderr


def test_accepting_an_unknown_run_is_an_error(tmp_path: Path) -> None:
    upgrade(f"sqlite:///{tmp_path}/s.db")
    result = stampede(tmp_path, "accept", str(uuid.uuid4()))
    assert result.returncode == 2 and "no run" in result.stderr
