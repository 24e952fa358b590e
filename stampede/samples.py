"""Records of what the GPU agent and the runtime scrapers observe: one per GPU reading and one per
scraped runtime value. Like :mod:`stampede.records`, they are pydantic models that cross process
boundaries as JSON; they have no derived fields.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class RuntimeKind(str, Enum):
    """A runtime the scrapers know how to read."""

    VLLM = "vllm"
    LLAMACPP = "llamacpp"
    OLLAMA = "ollama"


class _Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_job_arg(self) -> dict[str, Any]:
        """The JSON-able form, as a job would receive it."""
        return self.model_dump(mode="json")


class GpuProcess(_Sample):
    """A process holding memory on a GPU, as NVML lists it."""

    pid: int = Field(description="Process id on the GPU's host (or its container).")
    used_memory_bytes: int | None = Field(
        default=None, description="GPU memory the process holds; None where NVML cannot tell (e.g. under MIG)."
    )


class GpuSampleRecord(_Sample):
    """One NVML reading of one GPU; a field is None where the GPU or driver does not report it."""

    run_id: uuid.UUID | None = Field(default=None, description="Run being measured, if the agent was given one.")
    host: str = Field(description="Hostname of the GPU's machine.")
    sampled_at: AwareDatetime = Field(description="Wall-clock UTC time of the reading.")
    gpu_index: int = Field(ge=0, description="NVML device index.")
    gpu_uuid: str = Field(description="NVML device UUID, stable across reboots and index changes.")
    name: str = Field(description="Product name, e.g. 'NVIDIA H100 80GB HBM3'.")
    utilization_pct: float | None = Field(
        default=None, description="Percent of the last sample period in which a kernel ran."
    )
    memory_used_bytes: int | None = Field(default=None, description="Device memory in use, bytes.")
    memory_total_bytes: int | None = Field(default=None, description="Device memory installed, bytes.")
    power_w: float | None = Field(default=None, description="Board power draw, watts.")
    temperature_c: float | None = Field(default=None, description="GPU core temperature, degrees Celsius.")
    sm_clock_mhz: float | None = Field(default=None, description="Current SM clock, MHz.")
    processes: list[GpuProcess] = Field(default_factory=list, description="Compute processes on the GPU.")


class RuntimeSampleRecord(_Sample):
    """One value scraped from a runtime: a Prometheus sample, a llama.cpp slot field, an Ollama model size."""

    run_id: uuid.UUID | None = Field(default=None, description="Run being measured, if the scraper was given one.")
    target: str = Field(description="Label of the target runtime, as in the run's request records.")
    host: str = Field(description="Hostname of the scraping process.")
    sampled_at: AwareDatetime = Field(description="Wall-clock UTC time of the scrape.")
    metric: str = Field(description="Metric name, e.g. 'vllm:num_requests_running' or 'ollama:size_vram_bytes'.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the value (model, slot id, ...).")
    value: float = Field(description="The value, in the unit its metric name states.")
