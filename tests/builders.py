"""Builders of valid records for tests: every field set, any of them overridden by keyword."""

import uuid
from datetime import UTC, datetime

from stampede.records import Api, Outcome, RequestRecord

MS = 1_000_000


def request_record(**overrides: object) -> RequestRecord:
    """A successful streamed request: TTFT 50 ms, chunks at 50, 60 and 80 ms, E2E 90 ms, 3 tokens."""
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
