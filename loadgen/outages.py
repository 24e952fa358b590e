"""A sink's account of a store that fails: one line when deliveries start failing, one when they
succeed again, and the last failure, masked and cut short, for the line that says what was kept."""

from __future__ import annotations

import logging

from stampede.settings import redact

log = logging.getLogger(__name__)


class OutageLog:
    """Says when an outage begins and ends; ``secrets`` are masked in what it repeats of a failure."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = secrets
        self.failing = False
        self.last_failure = ""

    def failed(self, job: str, failure: Exception) -> None:
        # Masked and cut short: a driver's message may quote a URL or a whole batch.
        first_line = (redact(str(failure), self._secrets).splitlines() or [""])[0]
        self.last_failure = f"{type(failure).__name__}: {first_line[:200]}"
        if not self.failing:
            self.failing = True
            log.warning(
                "could not deliver %s (%s); buffering and retrying until the store is back", job, self.last_failure
            )

    def succeeded(self, buffered_records: int, spilled_jobs: int) -> None:
        if self.failing:
            self.failing = False
            log.warning(
                "store reachable again; delivering %d buffered records and %d spilled jobs",
                buffered_records,
                spilled_jobs,
            )
