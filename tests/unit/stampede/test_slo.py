"""One SLO type: a sweep file's [slo], a stored run's config and the dashboard's inputs all become it."""

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from stampede.metrics import Percentiles, RequestSample
from stampede.slo import Slo
from stampede.summary import StepSummary
from stampede.sweepfile import load_sweep_file


def summary(ttft_p99: float, errors: int = 0) -> StepSummary:
    p = Percentiles(ttft_p99, ttft_p99, ttft_p99)
    return StepSummary(1, 10.0, 100, errors, 10.0, 100.0, p, p, p, p)


def test_a_stored_slo_is_validated() -> None:
    with pytest.raises(ValidationError):
        Slo.of_config({"sweep": {"slo": {"ttft_ms": -1}}})
    with pytest.raises(ValidationError):
        Slo.of_config({"sweep": {"slo": {"ttft": 500}}})
    assert Slo.of_config({"sweep": None}) == Slo()


def test_requests_and_steps_are_judged_by_the_same_limits() -> None:
    slo = Slo(ttft_ms=500, max_error_rate=0.1)
    assert slo.met_by_step(summary(400)) and not slo.met_by_step(summary(600))
    assert not slo.met_by_step(summary(400, errors=20))
    fast = RequestSample(ok=True, ttft_ms=400.0, e2e_ms=900.0, tpot_ms=5.0, output_tokens=10)
    assert slo.met_by_request(fast) and not slo.met_by_request(replace(fast, ttft_ms=600.0))
    assert not slo.met_by_request(replace(fast, ok=False))
    assert slo.request_slo() == Slo(ttft_ms=500)


def test_the_sweep_files_slo_keys_read_into_it(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(
        'name = "s"\n[slo]\nttft_ms = 500\ntpot_ms = 50\ne2e_ms = 9000\nmax_error_rate = 0.01\n'
        '[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\nmodel = "m"\n'
    )
    assert load_sweep_file(path).slo == Slo(ttft_ms=500, tpot_ms=50, e2e_ms=9000, max_error_rate=0.01)
