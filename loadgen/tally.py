"""Each load-generating process counts the request records it makes per step, so a run knows whether
the store holds all of them.

The counts travel through the process's own sink, queued after the records they count, so they meet
the same outages, spill files and replays as the records. Every second, and as the test stops, the
counts that changed are sent; the store keeps each process's largest count per step. A step whose
stored rows fall short of the sum is reported incomplete (:func:`stampede.report.completeness`).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

import gevent

from loadgen.sinks import Sink
from stampede.records import LoadgenCountRecord, RequestRecord

SEND_EVERY_S = 1.0


class RequestTally:
    """Counts this process's request records by (run, target, step) and sends the counts through ``sink``."""

    def __init__(self, sink: Sink, host: str) -> None:
        self._sink = sink
        self._host = host
        self._counts: Counter[tuple[uuid.UUID, str, int]] = Counter()
        self._sent: dict[tuple[uuid.UUID, str, int], int] = {}
        self._greenlet: gevent.Greenlet | None = None

    def add(self, record: RequestRecord) -> None:
        """Count one record handed to the sink."""
        self._counts[(record.run_id, record.target, record.step_index)] += 1

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._send_every_second)

    def stop(self) -> None:
        """Stop the periodic sends and send the final counts."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self.send()

    def send(self) -> None:
        """Queue the counts that changed since the last send."""
        changed = [
            LoadgenCountRecord(
                run_id=run_id, target=target, step_index=step, host=self._host, pid=os.getpid(), requests=count
            )
            for (run_id, target, step), count in self._counts.items()
            if self._sent.get((run_id, target, step)) != count
        ]
        if changed:
            self._sink.add_loadgen_counts(changed)
            self._sent.update(self._counts)

    def _send_every_second(self) -> None:
        while True:
            gevent.sleep(SEND_EVERY_S)
            self.send()
