"""The sink's journal: every request row is on disk before it waits in memory.

A Locust process killed outright (SIGKILL, the OOM killer) loses what it holds in memory. So each
row, as it is added, is also written to the current journal segment, a file of COPY text lines
(``stampede-journal-PID-TOKEN-N.rows``), with one unbuffered write: once that returns the row is in
the operating system's hands and outlives the process. A segment holds one batch, after a first
line naming its columns; it is sealed when its batch is queued and removed once that batch is
delivered (or written to the spill file). What a killed process leaves behind is delivered by
``stampede replay`` (:mod:`loadgen.replay`); stores ignore rows they already hold, so a segment whose
batch was delivered just before the kill stores nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO

from stampede.rows import REQUEST_COLUMNS

log = logging.getLogger(__name__)

# A segment's first line names its columns; no row starts with "#" (rows start with a UUID).
COLUMNS_HEADER = "#columns "


class Journal:
    """Segments of one sink, named by ``segment_path`` from their number (see :mod:`loadgen.sinkfiles`)."""

    def __init__(self, segment_path: Callable[[int], Path]) -> None:
        self._segment_path = segment_path
        self._number = 0
        self._segment: IO[bytes] | None = None
        self._path: Path | None = None
        self._failed = False

    def append(self, line: str) -> None:
        """Write one row to the current segment, starting one if needed. A journal that cannot be
        written (disk full, directory gone) is given up with one warning: rows then live in memory
        only, as they would without it."""
        if self._failed:
            return
        try:
            if self._segment is None:
                self._number += 1
                self._path = self._segment_path(self._number)
                self._segment = self._path.open("ab", buffering=0)
                self._segment.write(f"{COLUMNS_HEADER}{','.join(REQUEST_COLUMNS)}\n".encode())
            data = line.encode()
            if self._segment.write(data) != len(data):
                raise OSError(f"short write to {self._path}")
        except OSError as exc:
            self._failed = True
            log.warning("journal %s unwritable (%s); rows are kept in memory only", self._path, exc)

    def seal(self) -> Path | None:
        """Close the current segment and return its path (None when nothing was journaled)."""
        segment, path = self._segment, self._path
        self._segment = self._path = None
        if segment is None:
            return None
        segment.close()
        return path

    @staticmethod
    def discard(path: Path | None) -> None:
        """Remove a segment whose rows are safe elsewhere (delivered, or in the spill file)."""
        if path is not None:
            path.unlink(missing_ok=True)


def read_segment(path: Path) -> tuple[list[str], list[str]]:
    """The columns and complete rows of a segment. The columns are those its writer named (this
    version's where it named none), so rows journaled before a schema change still store. A last line
    cut short by a crash mid-write is dropped (it may end inside a character, so lines are split as
    bytes and decoded whole)."""
    lines = path.read_bytes().split(b"\n")
    if lines[-1]:
        log.warning("%s: dropping an incomplete last row (%d bytes)", path, len(lines[-1]))
    rows = [line.decode() + "\n" for line in lines[:-1]]
    if rows and rows[0].startswith(COLUMNS_HEADER):
        return rows[0].removeprefix(COLUMNS_HEADER).rstrip("\n").split(","), rows[1:]
    return list(REQUEST_COLUMNS), rows
