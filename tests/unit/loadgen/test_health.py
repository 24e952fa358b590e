"""The load generator's self-check sees its own CPU use and a blocked event loop."""

import time
import uuid

import gevent

from loadgen.health import HealthMonitor
from stampede.metrics import generator_saturated
from stampede.records import LoadgenSampleRecord

RUN_ID = uuid.uuid4()


def test_a_blocked_loop_shows_as_lag_and_cpu() -> None:
    samples: list[LoadgenSampleRecord] = []
    monitor = HealthMonitor(samples.append, lambda: (RUN_ID, "t", 3), "host", interval_s=0.2)
    monitor.start()
    gevent.sleep(0.05)
    busy_until = time.perf_counter() + 0.08
    while time.perf_counter() < busy_until:  # hold the loop: no greenlet runs for 80 ms
        pass
    gevent.sleep(0.5)
    monitor.stop()
    assert len(samples) >= 2
    assert samples[0].run_id == RUN_ID and samples[0].step_index == 3
    assert max(s.loop_lag_ms for s in samples) >= 60
    assert max(s.cpu_pct for s in samples) >= 20
    assert min(s.loop_lag_ms for s in samples) < 60  # the lag is reset after each sample


def test_saturation_needs_high_cpu_or_lag_in_half_the_seconds() -> None:
    assert not generator_saturated([50.0, 80.0], [1.0, 3.0])
    assert generator_saturated([92.0, 95.0, 40.0], [1.0, 1.0, 1.0])
    assert generator_saturated([10.0, 10.0], [12.0, 15.0])
    assert not generator_saturated([10.0, 10.0, 10.0], [80.0, 1.0, 1.0])  # one stall is not saturation
    assert not generator_saturated([], [])
