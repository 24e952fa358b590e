"""Embedded mode: a sink whose store jobs run in a child process (:mod:`loadgen.store_process`),
against the configured database, so the load generator never does the storing itself."""

from __future__ import annotations

from typing import Any

from loadgen.sinks import Sink
from loadgen.store_process import StoreProcess
from loadgen.storejobs import STORE_REQUESTS
from stampede.rows import row_batch


class EmbeddedSink(Sink):
    """Embedded mode: the store jobs run in a child process, against the configured database.

    The child decodes each job's JSON, so a job gets exactly what it would from RQ's JSON serializer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._store = StoreProcess()
        super().__init__(*args, **kwargs)
        # The child's start (a second of imports, and the database's first connection) happens now,
        # with an empty batch, rather than with the first records while the load runs, where it
        # took a core the load generator needed. A caller that waits on flush() knows it is over.
        self._put(STORE_REQUESTS, row_batch([]))

    def close(self, timeout_s: float | None = None, keep: bool = True) -> bool:
        delivered = super().close(timeout_s, keep)
        self._store.stop()
        return delivered

    def _interrupt(self) -> None:
        self._store.kill()

    def _deliver(self, job: str, arg: Any) -> None:
        self._store.run(job, arg)
