"""Journal segments: a row cut short by a crash, and which left-behind files replay takes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadgen.journal import read_segment
from loadgen.replay import orphans


def test_a_row_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    segment = tmp_path / "stampede-journal-1-2-3.rows"
    segment.write_bytes("a\tb\nc\té\n".encode() + "e\té".encode()[:-1])  # cut inside the last character
    assert read_segment(segment) == ["a\tb\n", "c\té\n"]


def test_replay_takes_only_the_files_of_processes_that_are_gone(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = int(gone.stdout), os.getpid()
    names = [f"stampede-journal-{dead}-1-1.rows", f"stampede-spill-{dead}-1.jsonl", f"stampede-journal-{live}-1-1.rows"]
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "stampede-journal-x.rows").write_text("")  # not ours to guess about
    assert sorted(p.name for p in orphans(tmp_path)) == sorted(names[:2])
