"""Regression findings on hand-made summaries, both ways."""

from stampede.metrics import Percentiles
from stampede.regression import compare
from stampede.report import TargetStep
from stampede.summary import StepSummary
from stampede.sweepfile import RegressionSpec

SPEC = RegressionSpec(throughput_drop_pct=10, latency_rise_pct=20)


def step(index: int, users: int, tokens_per_s: float, ttft_p99: float, target: str = "vllm") -> TargetStep:
    p = Percentiles(ttft_p99 / 2, ttft_p99 * 0.9, ttft_p99)
    flat = Percentiles(10.0, 12.0, 15.0)
    summary = StepSummary(users, 10.0, 100, 0, 10.0, tokens_per_s, p, flat, flat, flat)
    return TargetStep(target, index, summary)


def test_a_run_within_thresholds_has_no_findings() -> None:
    baseline = [step(0, 1, 100.0, 50.0), step(1, 4, 400.0, 60.0)]
    current = [step(0, 1, 95.0, 59.0), step(1, 4, 361.0, 71.9)]
    assert compare(baseline, current, SPEC) == []


def test_a_throughput_drop_and_a_latency_rise_are_found() -> None:
    baseline = [step(0, 1, 100.0, 50.0), step(1, 4, 400.0, 60.0)]
    current = [step(0, 1, 100.0, 50.0), step(1, 4, 300.0, 90.0)]
    findings = compare(baseline, current, SPEC)
    assert [(f.step, f.metric) for f in findings] == [(1, "output_tokens_per_s"), (1, "ttft p99 ms")]
    assert findings[0].change_pct == -25.0
    assert "400.0 -> 300.0 (-25.0%)" in findings[0].describe()


def test_steps_are_only_compared_at_equal_load_and_target() -> None:
    baseline = [step(0, 2, 100.0, 50.0), step(0, 1, 100.0, 50.0, target="ollama")]
    current = [step(0, 1, 10.0, 500.0), step(0, 1, 100.0, 50.0, target="ollama")]
    assert compare(baseline, current, SPEC) == []
