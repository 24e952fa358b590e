"""Request records: derived fields, strict validation, and the JSON form jobs receive."""

import time
import uuid
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


def test_request_ids_are_version_7_uuids_in_time_order() -> None:
    before_ms = time.time_ns() // 1_000_000
    first = request_record().id
    time.sleep(0.002)
    later = [request_record().id for _ in range(1000)]
    after_ms = time.time_ns() // 1_000_000
    for made in (first, *later):
        assert (made.version, made.variant) == (7, uuid.RFC_4122)
        assert before_ms <= made.int >> 80 <= after_ms  # the first 48 bits: Unix time in ms
    assert all(first < made for made in later)  # a later millisecond sorts after
    assert len(set(later)) == 1000
