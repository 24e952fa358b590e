"""A stand-in for the ``pynvml`` module that answers from recorded readings (fixtures/nvml_*.json).

It has the functions and constants the agent calls, with pynvml's units (power in mW, memory in
bytes) and its failure mode: a reading recorded as null raises ``NVMLError_NotSupported``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class NVMLError(Exception):
    """Base of NVML's errors, as in pynvml."""


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class FakeNvml:
    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, fixture: str = "nvml_h100_h200.json", driver: bool = True) -> None:
        self.devices: list[dict[str, Any]] = json.loads((FIXTURES / fixture).read_text())["devices"]
        self.driver = driver
        self.initialised = False

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.devices[index]

    @staticmethod
    def _reading(device: dict[str, Any], key: str) -> Any:
        if device[key] is None:
            raise NVMLError_NotSupported("Not Supported")
        return device[key]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return str(handle["uuid"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(**self._reading(handle, "utilization"))

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(**self._reading(handle, "memory"))

    def nvmlDeviceGetPowerUsage(self, handle: dict[str, Any]) -> int:
        return int(self._reading(handle, "power_mw"))

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return int(self._reading(handle, "temperature_c"))

    def nvmlDeviceGetClockInfo(self, handle: dict[str, Any], clock: int) -> int:
        assert clock == self.NVML_CLOCK_SM
        return int(self._reading(handle, "sm_clock_mhz"))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: dict[str, Any]) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._reading(handle, "processes")]
