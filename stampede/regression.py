"""Compare a run with its baseline, step by step, and name what got worse.

Pure: summaries in, findings out. A step is compared with the baseline's step of the same target
and index when both ran the same load; a throughput drop or a p99 latency rise beyond the sweep's
thresholds is a finding, and a run with any finding is a regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from stampede import registry
from stampede.registry import Direction
from stampede.report import TargetStep
from stampede.sweepfile import RegressionSpec

CHECKED = sorted(
    (m for m in registry.METRICS.values() if m.regression), key=lambda m: m.direction is not Direction.HIGHER
)
"""The metrics compared with the baseline's (:attr:`stampede.registry.Metric.regression`): throughputs
first, then latencies, the order findings are listed in."""


@dataclass(frozen=True)
class Finding:
    """One figure that moved past its threshold."""

    target: str
    step: int
    users: int
    metric: str
    baseline: float
    current: float

    @property
    def change_pct(self) -> float:
        """``100 * (current - baseline) / baseline``."""
        return 100.0 * (self.current - self.baseline) / self.baseline

    def describe(self) -> str:
        return (
            f"{self.target} step {self.step} ({self.users} users): {self.metric} "
            f"{self.baseline:,.1f} -> {self.current:,.1f} ({self.change_pct:+.1f}%)"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"change_pct": self.change_pct}


def compare(baseline: Sequence[TargetStep], current: Sequence[TargetStep], spec: RegressionSpec) -> list[Finding]:
    """Findings of ``current`` against ``baseline``.

    - a figure where higher is better (output tokens/s) fell by more than ``throughput_drop_pct`` percent;
    - the p99 of a latency (TTFT, ITL, E2E) rose by more than ``latency_rise_pct`` percent.
    Steps without a counterpart at the same load, or without figures on either side, are skipped.
    """
    base = {(s.target, s.index): s.summary for s in baseline}
    findings = []
    for step in current:
        old, new = base.get((step.target, step.index)), step.summary
        if old is None or old.users != new.users:
            continue

        def finding(metric: str, before: float, after: float, step: TargetStep = step) -> Finding:
            return Finding(step.target, step.index, step.summary.users, metric, before, after)

        for metric in CHECKED:
            if metric.direction is Direction.HIGHER:
                before, after = getattr(old, metric.name), getattr(new, metric.name)
                if before > 0 and 100.0 * (before - after) / before > spec.throughput_drop_pct:
                    findings.append(finding(metric.name, before, after))
                continue
            before, after = getattr(old, metric.name).p99, getattr(new, metric.name).p99
            if before and after is not None and 100.0 * (after - before) / before > spec.latency_rise_pct:
                findings.append(finding(f"{metric.base} p99 {metric.unit}", before, after))
    return findings
