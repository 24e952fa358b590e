"""Request records: derived fields, strict validation, and the JSON form jobs receive."""

from datetime import datetime

import orjson
import pytest
from pydantic import ValidationError

from stampede.records import RequestRecord
from tests.builders import request_record


def make_record(**overrides: object) -> RequestRecord:
    return request_record(**overrides)


def test_derived_fields_come_from_raw_offsets() -> None:
    r = make_record()
    assert r.ttft_ms == 50.0
    assert r.itl_ms == [10.0, 20.0]
    assert r.e2e_ms == 90.0
    assert r.tpot_ms == pytest.approx(20.0)  # (90 - 50) / (3 - 1)


def test_job_argument_round_trips_through_json() -> None:
    r = make_record()
    arg = orjson.loads(orjson.dumps(r.to_job_arg()))
    assert "ttft_ms" not in arg
    assert RequestRecord.model_validate(arg) == r


def test_unknown_fields_and_naive_times_are_rejected() -> None:
    with pytest.raises(ValidationError):
        make_record(surprise=1)
    with pytest.raises(ValidationError):
        make_record(started_at=datetime(2026, 1, 1))
