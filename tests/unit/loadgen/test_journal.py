"""Journal segments: a row cut short by a crash, and which left-behind files replay takes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from loadgen.journal import Journal, read_segment
from loadgen.replay import orphans
from loadgen.sinkfiles import SinkFiles, hold_lock, left_behind, lock_path, owner_of, remove_stale_locks
from stampede.rows import REQUEST_COLUMNS


def test_a_row_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    segment = tmp_path / "stampede-journal-1-2-3.rows"
    segment.write_bytes("a\tb\nc\té\n".encode() + "e\té".encode()[:-1])  # cut inside the last character
    assert read_segment(segment) == (list(REQUEST_COLUMNS), ["a\tb\n", "c\té\n"])


def test_a_segment_keeps_the_columns_it_was_written_with(tmp_path: Path) -> None:
    journal = Journal(SinkFiles("1-a1", tmp_path / "spill.jsonl").segment)
    journal.append("x\ty\n")
    segment = journal.seal()
    assert segment is not None
    assert read_segment(segment) == (list(REQUEST_COLUMNS), ["x\ty\n"])
    segment.write_text("#columns id,run_id\nx\ty\n")  # as an older version with fewer columns wrote it
    assert read_segment(segment) == (["id", "run_id"], ["x\ty\n"])


def test_replay_takes_only_the_files_whose_writer_is_gone(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = int(gone.stdout), os.getpid()
    taken = [
        f"stampede-journal-{dead}-a1-1.rows",  # no lock file, and no such process
        f"stampede-spill-{dead}-a1.drained-2.jsonl",
        f"stampede-journal-{live}-b2-1.rows",  # a live process id, but its lock is free: id reused
    ]
    kept = [
        f"stampede-journal-{live}-c3-1.rows",  # no lock file, and a live process has the id
        f"stampede-spill-{live}-d4.jsonl",  # its writer holds the lock
        "stampede-journal-x.rows",  # not ours to guess about
    ]
    for name in taken + kept:
        (tmp_path / name).write_text("")
    lock_path(tmp_path, f"{live}-b2").write_text("")
    with hold_lock(lock_path(tmp_path, f"{live}-d4")):
        assert sorted(p.name for p in orphans(tmp_path)) == sorted(taken)
    assert f"stampede-spill-{live}-d4.jsonl" in [p.name for p in orphans(tmp_path)]  # released


def test_stale_lock_files_go_once_nothing_is_left(tmp_path: Path) -> None:
    (tmp_path / "stampede-journal-1-e5-1.rows").write_text("")
    for owner in ("1-e5", "1-f6"):
        lock_path(tmp_path, owner).write_text("")
    with hold_lock(lock_path(tmp_path, "1-g7")):
        remove_stale_locks(tmp_path)
        locks = sorted(p.name for p in tmp_path.glob("*.lock"))
    assert locks == ["stampede-owner-1-e5.lock", "stampede-owner-1-g7.lock"]


def test_every_file_a_sink_names_carries_its_owner_and_is_found_left_behind(tmp_path: Path) -> None:
    files = SinkFiles.new()
    assert files.spill.parent == Path(tempfile.gettempdir())
    files = SinkFiles(files.owner, tmp_path / files.spill.name)
    made = [files.spill, files.drained(2), files.kept, files.segment(1), files.segment(12)]
    for path in made:
        path.write_text("")
    assert {owner_of(path) for path in made} == {files.owner}
    assert sorted(left_behind(tmp_path)) == sorted(made)
    assert files.lock.name == f"stampede-owner-{files.owner}.lock"
