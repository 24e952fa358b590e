"""An RQ job class that compresses a job's arguments once.

RQ saves the whole job hash when a job finishes, and every save compresses the job's arguments again
with zlib, although they have not changed since the worker read them. For a batch of records that
is the largest single cost of storing it (about a third of a worker's time, see docs/benchmarks.md).
This class keeps the compressed form it read from Redis and writes it back as it was while the
arguments are unchanged. Jobs are stored exactly as RQ stores them, so a plain ``rq worker`` runs
them too, only slower.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job


class StampedeJob(Job):
    """An RQ ``Job`` that reuses the compressed arguments it was loaded with."""

    _loaded: tuple[object, bytes] | None = None
    """The arguments as loaded (RQ's own, unevaluated until read) and the compressed bytes they came from."""

    def restore(self, raw_data: Any) -> Any:
        """Load the job from its Redis hash, remembering its compressed arguments."""
        restored = super().restore(raw_data)
        compressed = raw_data.get(b"data", raw_data.get("data"))
        # RQ reads uncompressed data too (older jobs); only a hash that held zlib data is kept.
        self._loaded = (self._data, compressed) if compressed is not None and compressed != self._data else None
        return restored

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        """RQ's serialisation of the job, with the stored compressed arguments while they still apply."""
        if self._loaded is None or self._data is not self._loaded[0]:
            return super().to_dict(include_meta, include_result)
        data, self._data = self._data, b""  # compressed by RQ in no time, then replaced below
        try:
            fields = super().to_dict(include_meta, include_result)
        finally:
            self._data = data
        fields["data"] = self._loaded[1]
        return fields
