"""The request tally: counts per run, target and step, sent when they changed, after the records."""

from __future__ import annotations

import uuid

from loadgen.tally import RequestTally
from stampede.records import LoadgenCountRecord
from tests.builders import request_record


class CollectingSink:
    """Keeps what the tally queues, in order."""

    def __init__(self) -> None:
        self.sent: list[list[LoadgenCountRecord]] = []

    def add_loadgen_counts(self, counts: list[LoadgenCountRecord]) -> None:
        self.sent.append(counts)


def test_counts_are_per_step_and_only_changed_ones_are_sent_again() -> None:
    sink = CollectingSink()
    tally = RequestTally(sink, "h")  # type: ignore[arg-type]
    run_id = uuid.uuid4()
    for step in (0, 0, 1):
        tally.add(request_record(run_id=run_id, step_index=step))
    tally.send()
    assert sorted((c.step_index, c.requests) for c in sink.sent[0]) == [(0, 2), (1, 1)]
    tally.send()
    assert len(sink.sent) == 1  # nothing changed: nothing queued
    tally.add(request_record(run_id=run_id, step_index=1))
    tally.stop()  # the final send
    assert [(c.step_index, c.requests, c.host) for c in sink.sent[1]] == [(1, 2, "h")]
