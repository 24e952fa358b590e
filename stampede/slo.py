"""Service-level objectives: the one type a sweep file's ``[slo]``, a stored run's config and the
dashboard's inputs all become.

A request meets the SLOs when it succeeded and each set latency limit holds (goodput counts those); a
step meets them when each set limit holds at p99 and its error share is within ``max_error_rate``
(the knee is the highest load that does). Unset limits pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from stampede.metrics import RequestSample
    from stampede.summary import StepSummary

LATENCY_LIMITS = ("ttft_ms", "tpot_ms", "e2e_ms")
"""The latencies an SLO may limit, by their registry names (:mod:`stampede.registry`)."""


class Slo(BaseModel):
    """Service-level objectives: the knee is the highest load that meets all that are set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: float | None = Field(default=None, gt=0, description="p99 TTFT limit, ms.")
    tpot_ms: float | None = Field(default=None, gt=0, description="p99 TPOT limit, ms.")
    e2e_ms: float | None = Field(default=None, gt=0, description="p99 E2E limit, ms.")
    max_error_rate: float | None = Field(default=None, ge=0, le=1, description="Largest error share.")

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> Slo:
        """The SLOs of a stored run's config (``config["sweep"]["slo"]``), validated; none set without one."""
        sweep = config.get("sweep") or {}
        return cls.model_validate(sweep.get("slo") or {})

    @property
    def any_set(self) -> bool:
        return any(v is not None for v in self.model_dump().values())

    def latency_limits(self) -> dict[str, float | None]:
        """The latency limits by metric name (unset ones None)."""
        return {name: getattr(self, name) for name in LATENCY_LIMITS}

    def request_slo(self) -> Slo | None:
        """The per-request SLO behind goodput (latency limits only); None when no latency limit is set."""
        if all(v is None for v in self.latency_limits().values()):
            return None
        return self.model_copy(update={"max_error_rate": None})

    def met_by_request(self, s: RequestSample) -> bool:
        """``ok and TTFT <= ttft_ms and TPOT <= tpot_ms and E2E <= e2e_ms`` (unset limits pass)."""
        return s.ok and all(
            limit is None or (value is not None and value <= limit)
            for limit, value in ((limit, getattr(s, name)) for name, limit in self.latency_limits().items())
        )

    def met_by_step(self, s: StepSummary) -> bool:
        """A step meets the SLOs when each set p99 limit and the error-rate limit hold (unset limits pass)."""
        latencies_ok = all(
            limit is None or (value is not None and value <= limit)
            for limit, value in ((limit, getattr(s, name).p99) for name, limit in self.latency_limits().items())
        )
        errors_ok = self.max_error_rate is None or s.error_rate <= self.max_error_rate
        return s.requests > 0 and latencies_ok and errors_ok
