"""The GPU agent against recorded NVML readings: there is no GPU on the development machines, so
these tests run ``workers.gpu`` on a fake ``pynvml`` built from fixtures/nvml_h100_h200.json (two
H100s and one H200, hand-written in the shape nvidia-ml-py returns). The no-driver test also runs
the real ``pynvml``, which on a machine without the driver fails to load NVML as on a user's laptop.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from stampede.db import make_engine, upgrade
from stampede.schema import GpuSample
from stampede.settings import get_settings
from tests.unit.workers.fake_nvml import FakeNvml, NVMLError
from workers import gpu


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    upgrade(url)
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_readings_map_to_units_and_unsupported_ones_to_none() -> None:
    nvml = FakeNvml()
    nvml.nvmlInit()
    run_id = uuid.uuid4()
    busy, idle, h200 = gpu.read_gpus(nvml, "gpu-host", run_id)
    assert (busy.name, busy.gpu_index, busy.run_id, busy.host) == ("NVIDIA H100 80GB HBM3", 0, run_id, "gpu-host")
    assert busy.utilization_pct == 97.0
    assert (busy.memory_used_bytes, busy.memory_total_bytes) == (79456894976, 85520809984)
    assert busy.power_w == pytest.approx(612.481)
    assert (busy.temperature_c, busy.sm_clock_mhz) == (64, 1980)
    assert [(p.pid, p.used_memory_bytes) for p in busy.processes] == [(48211, 78920024064)]
    assert [(p.pid, p.used_memory_bytes) for p in idle.processes] == [(48213, None)]
    assert h200.name == "NVIDIA H200" and h200.power_w is None and h200.processes == []
    assert h200.gpu_uuid == "GPU-e5d18b42-9f07-4c3a-8d2e-6b7a1c0f9e38"


def test_agent_stores_one_row_per_gpu_per_reading(database: str) -> None:
    run_id = uuid.uuid4()
    nvml = FakeNvml()
    assert gpu.main(["--count", "2", "--interval-s", "0.01", "--run-id", str(run_id)], nvml=nvml) == 0
    assert not nvml.initialised  # shut down on the way out
    engine = make_engine(database)
    with Session(engine) as session:
        rows = session.scalars(select(GpuSample).order_by(GpuSample.id)).all()
    engine.dispose()
    assert len(rows) == 6
    assert {r.run_id for r in rows} == {run_id}
    assert [r.gpu_index for r in rows] == [0, 1, 2, 0, 1, 2]
    assert rows[0].processes == [{"pid": 48211, "used_memory_bytes": 78920024064}]


@pytest.mark.parametrize("nvml", [FakeNvml(driver=False), pynvml], ids=["fake", "real-pynvml"])
def test_no_driver_says_so_once_and_exits_zero(nvml, database: str, caplog: pytest.LogCaptureFixture) -> None:
    if nvml is pynvml:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            pass
        else:
            pynvml.nvmlShutdown()
            pytest.skip("this machine has an NVIDIA driver")
    with caplog.at_level(logging.INFO, logger="workers.gpu"):
        assert gpu.main(["--count", "3", "--interval-s", "0.01"], nvml=nvml) == 0
    assert [r.getMessage() for r in caplog.records if "no NVIDIA GPU" in r.getMessage()] != []
    assert len(caplog.records) == 1


def test_unknown_runtime_kind_is_refused() -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(["--scrape", "tgi", "http://127.0.0.1:1", "t"])


class LostGpuNvml(FakeNvml):
    """The recorded host, with its GPUs gone after the first reading (NVML's 'GPU is lost')."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def nvmlDeviceGetCount(self) -> int:
        self.readings += 1
        if self.readings > 1:
            raise NVMLError("GPU is lost")
        return super().nvmlDeviceGetCount()


def test_a_lost_gpu_is_said_once_and_sampling_goes_on(database: str, caplog: pytest.LogCaptureFixture) -> None:
    nvml = LostGpuNvml()
    with caplog.at_level(logging.WARNING, logger="workers.gpu"):
        assert gpu.main(["--count", "4", "--interval-s", "0.01"], nvml=nvml) == 0
    assert nvml.readings == 4
    assert [r.getMessage() for r in caplog.records] == [
        "reading the GPUs failed (NVMLError: GPU is lost); retrying each interval"
    ]
    engine = make_engine(database)
    with Session(engine) as session:
        assert len(session.scalars(select(GpuSample)).all()) == 3  # the first reading only
    engine.dispose()


def test_a_new_sqlite_file_gets_its_tables_and_the_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"  # never upgraded: the agent's first connection does it
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="workers.gpu"):
            nvml = FakeNvml()
            assert gpu.main(["--count", "3", "--interval-s", "0.01"], nvml=nvml) == 0
    finally:
        get_settings.cache_clear()
    assert caplog.records == []
    engine = make_engine(url)
    with Session(engine) as session:
        assert len(session.scalars(select(GpuSample)).all()) == 3 * len(nvml.devices)  # three readings of each GPU
    engine.dispose()


class SlowNvml(FakeNvml):
    """Readings that take longer than the interval."""

    def nvmlDeviceGetCount(self) -> int:
        time.sleep(0.02)
        return super().nvmlDeviceGetCount()


def test_readings_slower_than_the_interval_follow_one_another(database: str) -> None:
    assert gpu.main(["--count", "5", "--interval-s", "0.001"], nvml=SlowNvml()) == 0
    engine = make_engine(database)
    with Session(engine) as session:
        assert len({s.sampled_at for s in session.scalars(select(GpuSample))}) == 5
    engine.dispose()
