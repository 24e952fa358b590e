"""The sampling agent (``python -m workers agent``, ``stampede agent``): reads every NVIDIA GPU of
its host through NVML once per interval, and optionally scrapes runtimes, into the results store.

NVML gives, per GPU: name, utilisation, memory used and total, power, temperature, SM clock, and the
compute processes with their memory where the driver reports it. A field the GPU does not support
is stored as NULL. On a host without an NVIDIA driver the agent says so in one line and, with no
runtime to scrape, exits with status 0: having nothing to sample is not a failure, so one command
can be run on every host of a fleet.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pynvml
from sqlalchemy.orm import Session

from stampede import store
from stampede.db import get_engine, store_problem
from stampede.samples import GpuProcess, GpuSampleRecord, RuntimeKind, RuntimeSampleRecord
from stampede.settings import get_settings
from workers import scrapers

log = logging.getLogger(__name__)


def _optional(nvml: Any, read: Callable[..., Any], *args: Any) -> Any:
    # Consumer and older boards lack some readings (power, per-process memory): those become None.
    try:
        return read(*args)
    except nvml.NVMLError:
        return None


def read_gpus(nvml: Any, host: str, run_id: uuid.UUID | None = None) -> list[GpuSampleRecord]:
    """One reading of every GPU. ``nvml`` is the ``pynvml`` module, already initialised (or a stand-in)."""
    sampled_at = datetime.now(UTC)
    samples = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        utilization = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        processes = _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        samples.append(
            GpuSampleRecord(
                run_id=run_id,
                host=host,
                sampled_at=sampled_at,
                gpu_index=index,
                gpu_uuid=nvml.nvmlDeviceGetUUID(handle),
                name=nvml.nvmlDeviceGetName(handle),
                utilization_pct=None if utilization is None else float(utilization.gpu),
                memory_used_bytes=None if memory is None else int(memory.used),
                memory_total_bytes=None if memory is None else int(memory.total),
                power_w=None if power_mw is None else power_mw / 1000.0,
                temperature_c=_optional(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
                sm_clock_mhz=_optional(nvml, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
                processes=[GpuProcess(pid=p.pid, used_memory_bytes=p.usedGpuMemory) for p in processes],
            )
        )
    return samples


def open_nvml(nvml: Any = pynvml) -> Any | None:
    """``nvml`` initialised, or None (after one log line saying why) on a host without an NVIDIA driver."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.warning("no NVIDIA GPU to sample on this host (NVML: %s)", exc)
        return None
    return nvml


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options of ``python -m workers agent`` (``stampede agent``)."""
    parser = argparse.ArgumentParser(prog="stampede agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval-s", type=float, default=1.0, help="seconds between readings (default: 1)")
    parser.add_argument("--run-id", type=uuid.UUID, default=None, help="run to attach the samples to")
    parser.add_argument(
        "--scrape",
        nargs=3,
        action="append",
        default=[],
        metavar=("KIND", "URL", "TARGET"),
        help="also scrape a runtime: KIND is one of vllm, llamacpp, ollama; TARGET is its label in the "
        "run (repeatable)",
    )
    parser.add_argument("--count", type=int, default=None, help="stop after this many readings (default: run on)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    for kind, _url, _target in args.scrape:
        if kind not in {k.value for k in RuntimeKind}:
            parser.error(f"unknown runtime kind {kind!r}: use vllm, llamacpp or ollama")
    return args


class _Outages:
    """One log line when a source starts failing and one when it works again, not one per interval."""

    def __init__(self) -> None:
        self._down: set[str] = set()

    def failed(self, source: str, why: str, consequence: str) -> None:
        if source not in self._down:
            self._down.add(source)
            log.warning("%s failed (%s); %s", source, why, consequence)

    def worked(self, source: str) -> None:
        if source in self._down:
            self._down.discard(source)
            log.warning("%s works again", source)


def main(argv: list[str], nvml: Any = pynvml) -> int:
    """Sample until stopped (or ``--count`` readings); the store is the configured database."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gpus = open_nvml(nvml)
    if gpus is None and not args.scrape:
        return 0
    host = socket.gethostname()
    engine = get_engine(get_settings().database_url.get_secret_value())
    outages = _Outages()
    next_at = time.monotonic()
    readings = 0
    try:
        while args.count is None or readings < args.count:
            gpu_samples = _read_gpus(gpus, host, args.run_id, outages) if gpus is not None else []
            runtime_samples: list[RuntimeSampleRecord] = []
            for kind, url, target in args.scrape:
                runtime_samples += _scrape(kind, url, target, args.run_id, outages)
            _store(engine, gpu_samples, runtime_samples, outages)
            readings += 1
            # A reading that overran its interval is not made up for: the next one starts now.
            next_at = max(next_at + args.interval_s, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))  # the clock moved on since the line above
    except KeyboardInterrupt:
        pass
    finally:
        if gpus is not None:
            gpus.nvmlShutdown()
    return 0


def _read_gpus(nvml: Any, host: str, run_id: uuid.UUID | None, outages: _Outages) -> list[GpuSampleRecord]:
    try:
        samples = read_gpus(nvml, host, run_id)
    except nvml.NVMLError as exc:  # e.g. a GPU fallen off the bus: keep scraping the runtimes
        outages.failed("reading the GPUs", f"{type(exc).__name__}: {exc}", "retrying each interval")
        return []
    outages.worked("reading the GPUs")
    return samples


def _scrape(kind: str, url: str, target: str, run_id: uuid.UUID | None, outages: _Outages) -> list[RuntimeSampleRecord]:
    source = f"scraping {target} at {url}"
    try:
        samples = scrapers.scrape_once(kind, url, target=target, run_id=run_id)
    except (OSError, ValueError) as exc:
        # The runtime's own words (e.g. llama-server's "Start it with `--metrics`") say what to fix.
        outages.failed(source, f"{type(exc).__name__}: {exc}", "retrying each interval")
        return []
    outages.worked(source)
    return samples


def _store(
    engine: Any, gpu_samples: list[GpuSampleRecord], runtime_samples: list[RuntimeSampleRecord], outages: _Outages
) -> None:
    try:
        with Session(engine) as session, session.begin():
            store.insert_gpu_samples(session, gpu_samples)
            store.insert_runtime_samples(session, runtime_samples)
    except Exception as exc:  # any database failure: keep sampling
        # Samples are a time series: while the store is away they are dropped, not queued for later.
        url = engine.url.render_as_string(hide_password=True)
        outages.failed("storing samples", store_problem(exc, url), "dropping them until the store is back")
        return
    outages.worked("storing samples")
