"""Ground truth: what really happened to each request, for comparison with what a client measured.

Times are ``time.monotonic_ns()`` of the simulator process; :func:`clock_anchor` pairs one monotonic
reading with the wall clock so another host can align them. Records are kept in memory (the newest
``limit``), served at ``GET /sim/requests`` and optionally appended to a JSONL file.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from pathlib import Path
from typing import IO, Any

import orjson


def clock_anchor() -> dict[str, int]:
    """One simultaneous reading of the wall clock and the monotonic clock, in ns."""
    return {"unix_ns": time.time_ns(), "monotonic_ns": time.monotonic_ns()}


class RequestTruth:
    """One request's life; ``token_written_ns[i]`` is when token ``i`` went to the socket."""

    __slots__ = (
        "id",
        "endpoint",
        "model",
        "stream",
        "status",
        "fault",
        "arrived_ns",
        "admitted_ns",
        "first_token_ns",
        "finished_ns",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "outcome",
        "token_scheduled_ns",
        "token_written_ns",
    )

    def __init__(self, request_id: int, endpoint: str, arrived_ns: int) -> None:
        self.id = request_id
        self.endpoint = endpoint
        self.arrived_ns = arrived_ns
        self.model: str | None = None
        self.stream = False
        self.status = 200
        self.fault: str | None = None
        self.admitted_ns: int | None = None
        self.first_token_ns: int | None = None
        self.finished_ns: int | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.outcome = "ok"
        """ok, error (an HTTP error answer), disconnected (the client left) or the mid-stream fault's name."""
        self.token_scheduled_ns = array("q")
        """When the engine produced each token (its step's end)."""
        self.token_written_ns = array("q")
        """When each token was handed to the socket (read just before the write); for a non-streamed
        answer, when the body was."""

    def to_dict(self) -> dict[str, Any]:
        return {
            name: (value.tolist() if isinstance(value, array) else value)
            for name in self.__slots__
            for value in (getattr(self, name),)
        }


class TruthLog:
    """Finished requests, newest ``limit`` kept in memory, each also appended to ``path`` if given."""

    def __init__(self, limit: int = 10_000, path: Path | None = None) -> None:
        self.anchor = clock_anchor()
        self._records: deque[RequestTruth] = deque(maxlen=limit)
        self._next_id = 1
        self._file: IO[bytes] | None = path.open("ab") if path is not None else None

    def open(self, endpoint: str, now_ns: int) -> RequestTruth:
        """Start the record of a request that just arrived."""
        record = RequestTruth(self._next_id, endpoint, now_ns)
        self._next_id += 1
        return record

    def close(self, record: RequestTruth, now_ns: int) -> None:
        """Finish a record (once) and publish it."""
        if record.finished_ns is not None:
            return
        record.finished_ns = now_ns
        self._records.append(record)
        if self._file is not None:
            self._file.write(orjson.dumps(record.to_dict()) + b"\n")

    def since(self, after_id: int) -> list[dict[str, Any]]:
        """Records with an id above ``after_id``, oldest first."""
        return [r.to_dict() for r in self._records if r.id > after_id]

    def shutdown(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
