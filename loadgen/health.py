"""The load generator watches itself: CPU use and event-loop lag, sampled once a second.

A generator that runs out of CPU or whose gevent loop falls behind delays its own reads, and its
figures then describe the client, not the server; the samples let a report flag such steps.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import gevent

from stampede.records import LoadgenSampleRecord, utc_now

PROBE_INTERVAL_S = 0.01


class HealthMonitor:
    """Two greenlets: a probe that measures how late the loop wakes it, and a sampler."""

    def __init__(
        self,
        emit: Callable[[LoadgenSampleRecord], None],
        describe: Callable[[], tuple[uuid.UUID, str, int]],
        host: str,
        interval_s: float = 1.0,
    ) -> None:
        self._emit = emit
        self._describe = describe  # (run id, target, step index) at sampling time
        self._host = host
        self._interval_s = interval_s
        self._max_lag_ns = 0
        self._greenlets: list[gevent.Greenlet] = []

    def start(self) -> None:
        if not self._greenlets:
            self._greenlets = [gevent.spawn(self._probe), gevent.spawn(self._sample)]

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []

    def _probe(self) -> None:
        interval_ns = int(PROBE_INTERVAL_S * 1e9)
        while True:
            before = time.perf_counter_ns()
            gevent.sleep(PROBE_INTERVAL_S)
            self._max_lag_ns = max(self._max_lag_ns, time.perf_counter_ns() - before - interval_ns)

    def _sample(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        while True:
            gevent.sleep(self._interval_s)
            now_wall, now_cpu = time.perf_counter(), time.process_time()
            cpu_pct = 100.0 * (now_cpu - cpu) / max(now_wall - wall, 1e-9)
            lag_ms, self._max_lag_ns = max(0, self._max_lag_ns) / 1e6, 0
            wall, cpu = now_wall, now_cpu
            run_id, target, step_index = self._describe()
            self._emit(
                LoadgenSampleRecord(
                    run_id=run_id,
                    target=target,
                    step_index=step_index,
                    host=self._host,
                    pid=os.getpid(),
                    sampled_at=utc_now(),
                    cpu_pct=cpu_pct,
                    loop_lag_ms=lag_ms,
                )
            )
