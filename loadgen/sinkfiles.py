"""What a sink keeps on disk: the one place that names its files, its lock file, and its spill file.

A sink is known on disk by its owner, ``PID-TOKEN`` (the token keeps names unique where process ids
repeat, as a container's first process always does). In its directory (the temporary one) it has:

- ``stampede-journal-OWNER-N.rows``: journal segments, the rows it holds (:mod:`loadgen.journal`);
- ``stampede-spill-OWNER.jsonl``: the spill file, jobs that did not fit in memory while the store was
  away; once read back it is renamed ``.drained-N.jsonl`` and kept until its last job is delivered;
- ``stampede-spill-OWNER.kept.jsonl``: every job it could not deliver at close, for ``stampede replay``;
- ``stampede-owner-OWNER.lock``: locked while the sink lives, so replay leaves its files alone.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

SPILL_PREFIX = "stampede-spill-"
JOURNAL_PREFIX = "stampede-journal-"
LOCK_PREFIX = "stampede-owner-"
SEGMENT_SUFFIX = ".rows"
LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class SinkFiles:
    """The names of one sink's files. ``spill`` may be given (tests, a chosen folder); the others sit
    beside it."""

    owner: str
    spill: Path

    @classmethod
    def new(cls, spill: Path | None = None) -> SinkFiles:
        owner = f"{os.getpid()}-{secrets.token_hex(6)}"
        return cls(owner, spill or Path(tempfile.gettempdir()) / f"{SPILL_PREFIX}{owner}.jsonl")

    @property
    def directory(self) -> Path:
        return self.spill.parent

    @property
    def kept(self) -> Path:
        return self.spill.with_name(f"{self.spill.stem}.kept.jsonl")

    @property
    def lock(self) -> Path:
        return lock_path(self.directory, self.owner)

    def segment(self, number: int) -> Path:
        return self.directory / f"{JOURNAL_PREFIX}{self.owner}-{number}{SEGMENT_SUFFIX}"

    def drained(self, number: int) -> Path:
        return self.spill.with_name(f"{self.spill.stem}.drained-{number}.jsonl")

    def spill_files(self) -> list[Path]:
        """The spill file and the drained ones, if any."""
        drained = self.directory.glob(f"{self.spill.stem}.drained-*.jsonl")
        return [*drained, *([self.spill] if self.spill.exists() else [])]


def is_segment(path: Path) -> bool:
    return path.suffix == SEGMENT_SUFFIX


def left_behind(directory: Path) -> list[Path]:
    """Spill files (drained and kept ones too) and journal segments in ``directory``, of any owner."""
    return [*directory.glob(f"{SPILL_PREFIX}*.jsonl"), *directory.glob(f"{JOURNAL_PREFIX}*{SEGMENT_SUFFIX}")]


def owner_of(path: Path) -> str | None:
    """The owner in a journal or spill file's name (``stampede-journal-PID-TOKEN-N.rows``,
    ``stampede-spill-PID-TOKEN[.drained-N].jsonl``): ``PID-TOKEN``, if the name has one."""
    parts = path.name.split(".")[0].split("-")
    if len(parts) > 3 and parts[2].isdigit() and parts[3]:
        return f"{parts[2]}-{parts[3]}"
    return None


def lock_path(directory: Path, owner: str) -> Path:
    """The file a sink keeps locked while it lives, so replay can tell its files from a dead one's."""
    return directory / f"{LOCK_PREFIX}{owner}{LOCK_SUFFIX}"


def remove_stale_locks(directory: Path) -> None:
    """Remove the lock files of owners that are gone and left nothing behind."""
    left = {owner_of(p) for p in [*directory.glob(f"{SPILL_PREFIX}*"), *directory.glob(f"{JOURNAL_PREFIX}*")]}
    for lock in directory.glob(f"{LOCK_PREFIX}*{LOCK_SUFFIX}"):
        owner = lock.name.removeprefix(LOCK_PREFIX).removesuffix(LOCK_SUFFIX)
        if owner not in left and owner_gone(directory, owner):
            lock.unlink(missing_ok=True)


def hold_lock(path: Path) -> IO[bytes]:
    """Create and lock ``path``; the lock lasts until the returned file is closed or the process ends."""
    held = path.open("ab")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return held


def owner_gone(directory: Path, owner: str) -> bool:
    """Whether the sink ``owner`` (``PID-TOKEN``) is gone: its lock file is held by no process (a
    process id alone can be reused, as a container's first process always is). Without a lock file,
    whether no process on this host has that id."""
    try:
        with lock_path(directory, owner).open("rb") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
    except FileNotFoundError:
        return not _alive(int(owner.split("-")[0]))


def abandoned(path: Path) -> bool:
    """Whether a journal or spill file's writer is gone."""
    owner = owner_of(path)
    return owner is not None and owner_gone(path.parent, owner)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_line(job: str, arg: Any) -> bytes:
    """A job as one line of a spill or kept file, as ``stampede replay`` reads it."""
    return orjson.dumps({"job": job, "arg": arg}) + b"\n"


def write_kept(path: Path, jobs: list[tuple[str, Any]]) -> None:
    """Write ``jobs``, in order, to ``path`` and make sure they are on disk; raises OSError."""
    with path.open("wb") as out:
        out.writelines(job_line(job, arg) for job, arg in jobs)
        out.flush()
        os.fsync(out.fileno())


class SpillFile:
    """Jobs that did not fit in memory, appended to the sink's spill file and read back in order."""

    def __init__(self, files: SinkFiles) -> None:
        self._files = files
        self._writer: IO[bytes] | None = None
        self._reader: IO[bytes] | None = None
        self._drained = 0
        self.unread = 0
        """Jobs written and not yet taken back."""

    @property
    def path(self) -> Path:
        return self._files.spill

    def append(self, job: str, arg: Any) -> None:
        """Write one job through to the file, starting it if needed."""
        if self._writer is None:
            self._writer = self.path.open("ab")
        self._writer.write(job_line(job, arg))
        # Written through, so a process that dies during an outage leaves its jobs in the file.
        self._writer.flush()
        self.unread += 1

    def take(self) -> tuple[str, Any, Path | None]:
        """The oldest unread job, and the file that keeps it on disk while it is delivered (for all but
        the last job, the spill file itself, which still holds the later ones: then None)."""
        if self._reader is None:
            self._reader = self.path.open("rb")
        entry = orjson.loads(self._reader.readline())
        self.unread -= 1
        if self.unread:
            return entry["job"], entry["arg"], None
        # Drained: the next outage starts a fresh file. This one keeps the last job on disk, under
        # another name, until that job is delivered.
        self.close()
        self._drained += 1
        return entry["job"], entry["arg"], self.path.rename(self._files.drained(self._drained))

    def unread_jobs(self) -> list[tuple[str, Any]]:
        """The jobs not yet taken back, in order."""
        if not self.unread:
            return []
        with self.path.open("rb") as spilled:
            lines = spilled.read().splitlines()
        # The reader took the first ones.
        return [(entry["job"], entry["arg"]) for entry in map(orjson.loads, lines[len(lines) - self.unread :])]

    def close(self) -> None:
        for stream in (self._writer, self._reader):
            if stream is not None:
                stream.close()
        self._writer = self._reader = None

    def remove(self) -> None:
        """Remove the spill file and the drained ones."""
        for path in self._files.spill_files():
            path.unlink(missing_ok=True)
