"""The store jobs a sink sends, named by the dotted path an RQ worker (or the embedded store) runs.

Jobs are named, never imported, so a Locust process never loads the worker code.
"""

from __future__ import annotations

from typing import Any

STORE_REQUESTS = "workers.jobs.store_request_rows"
STORE_RUN = "workers.jobs.store_run"
STORE_STEP = "workers.jobs.store_step"
STORE_LOADGEN_SAMPLES = "workers.jobs.store_loadgen_samples"
STORE_LOADGEN_COUNTS = "workers.jobs.store_loadgen_counts"


def records_in(job: str, arg: Any) -> int:
    """How many records a job stores: a batch of request rows counts its rows, any other job is one."""
    return int(arg["count"]) if job == STORE_REQUESTS else 1
