"""The embedded store, in a child process: it runs the store jobs so the load generator never does.

Storing a batch is Python work (validation, building rows, the database driver) that holds the GIL,
and a Locust process that holds the GIL for tens of milliseconds stamps every chunk arriving
meanwhile that much late. A long-lived child (``python -m loadgen.store_process``) takes one JSON
line per job on its stdin, runs the job by its dotted name, exactly as an RQ worker would, and
answers ``ok`` or ``error MESSAGE`` on its stdout. The parent side uses plain file descriptors from
a thread of gevent's pool, so the event loop never waits and the GIL is free while the child works.

The child runs at the lowest priority (nice 19): on a machine whose cores the load generator and
the target share, a batch being stored would otherwise keep the load generator waiting for a core,
its reads late by as much. Its start-up (a second of imports and the database's first connection)
is done before the load (see ``EmbeddedSink``), since at nice 19 on a machine the load saturates it
would take many seconds; a batch is a few tens of ms. (``SCHED_IDLE`` could starve outright.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import orjson
from gevent.monkey import get_original
from rq.utils import import_attribute

# The unpatched calls. gevent's spawn and waitpid watch children from the event loop (only from its
# thread), and its close defers closing a pipe to the next loop turn, which a blocking waitpid never
# reaches. These pipes are never watched by gevent: they are read and written from a pool thread.
_posix_spawn = get_original("os", "posix_spawn")
_waitpid = get_original("os", "waitpid")
_close = get_original("os", "close")

OK = b"ok"


class StoreProcessError(RuntimeError):
    """The child could not run a job (the store refused it, or the child died)."""


class StoreProcess:
    """The parent's handle on the child: started on first use, started again after it dies."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._to_child = -1
        self._from_child = -1
        self._pending = b""
        self._lost: list[int] = []  # children that died, reaped by stop() from the event loop's thread

    def run(self, job: str, arg: Any) -> None:
        """Run ``job(arg)`` in the child; raises StoreProcessError unless it succeeded."""
        if self._pid is None:
            self._start()
        try:
            _write_all(self._to_child, orjson.dumps([job, arg]) + b"\n")
            reply = self._read_line()
        except OSError as exc:
            self._drop()
            raise StoreProcessError(f"store process lost: {exc}") from None
        if reply != OK:
            raise StoreProcessError(reply.removeprefix(b"error ").decode(errors="replace"))

    def kill(self) -> None:
        """End the child now (a delivery given up at exit): the read waiting for its reply then ends."""
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)

    def stop(self) -> None:
        """Close the child's input (it exits when it sees the end) and reap it and any lost ones."""
        self._drop()
        for pid in self._lost:
            with contextlib.suppress(ChildProcessError):  # gevent's SIGCHLD handling may have reaped it
                _waitpid(pid, 0)
        self._lost = []

    def _drop(self) -> None:
        if self._pid is None:
            return
        for fd in (self._to_child, self._from_child):
            _close(fd)
        self._lost.append(self._pid)
        self._pid, self._pending = None, b""

    def _start(self) -> None:
        child_in, self._to_child = os.pipe()
        self._from_child, child_out = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, child_in, 0), (os.POSIX_SPAWN_DUP2, child_out, 1)]
        argv = [sys.executable, "-m", "loadgen.store_process"]
        self._pid = _posix_spawn(sys.executable, argv, os.environ, file_actions=actions)
        _close(child_in)
        _close(child_out)

    def _read_line(self) -> bytes:
        while b"\n" not in self._pending:
            data = os.read(self._from_child, 4096)
            if not data:
                raise OSError("the store process exited")
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    """The child: run each job line from stdin, answer one line per job on stdout."""
    with contextlib.suppress(OSError):  # a sandbox may refuse it; storing matters more
        os.nice(19)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        job, arg = orjson.loads(line)
        try:
            import_attribute(job)(arg)
        except Exception as exc:  # reported to the parent, which keeps the batch and retries
            message = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:1000]
            out.write(b"error " + message.encode() + b"\n")
        else:
            out.write(OK + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
