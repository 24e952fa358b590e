"""Request records: derived fields, strict validation, and the JSON form jobs receive."""

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from stampede.records import Api, Outcome, RequestRecord

MS = 1_000_000


def make_record(**overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "run_id": uuid.uuid4(),
        "target": "t",
        "step_index": 0,
        "in_warmup": False,
        "host": "h",
        "pid": 1,
        "api": Api.OPENAI_CHAT,
        "model": "m",
        "prompt_id": "p",
        "outcome": Outcome.OK,
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "chunk_offsets_ns": [50 * MS, 60 * MS, 80 * MS],
        "end_offset_ns": 90 * MS,
        "output_tokens": 3,
    }
    fields.update(overrides)
    return RequestRecord.model_validate(fields)


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
