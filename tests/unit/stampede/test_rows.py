"""Row batches: what a record becomes on the wire, and what a store reads back from it."""

from __future__ import annotations

import uuid

import pytest
from pydantic import BaseModel

from stampede import rows
from stampede.records import (
    LoadgenCountRecord,
    LoadgenSampleRecord,
    Outcome,
    RequestRecord,
    RunRecord,
    StepRecord,
)
from stampede.samples import GpuSampleRecord, RuntimeSampleRecord
from stampede.schema import Base, GpuSample, LoadgenCount, LoadgenSample, Request, Run, RuntimeSample, Step
from tests.builders import request_record


def test_record_fields_table_columns_and_the_row_encoding_agree() -> None:
    """The request's shape has one definition, the ``requests`` table: a field added to the record or a
    column added to the table alone shows here (a column no record can fill already fails the import)."""
    columns = [c.name for c in Request.__table__.columns]
    assert list(rows.REQUEST_COLUMNS) == columns
    fields = set(RequestRecord.model_fields) | set(RequestRecord.model_computed_fields)
    assert fields - set(columns) == rows.UNSTORED_FIELDS
    assert set(columns) - fields == set(rows.DERIVED_COLUMNS)
    record = request_record(chunk_tokens=[1, 2, 1], send_delay_ns=2_500_000, late_chunks=[1])
    values = rows.request_values(record)
    assert list(values) == columns
    assert values["api"] == record.api.value and values["send_delay_ms"] == 2.5 and values["output_chunks"] == 3
    line = rows.encode_request(record)
    by_name = dict(zip(columns, line[:-1].split("\t"), strict=True))
    assert (by_name["id"], by_name["late_chunks"], by_name["reconnects"]) == (str(record.id), "[1]", "0")
    (decoded,) = rows.decode_rows(rows.check_batch(rows.row_batch([line])))
    assert decoded == values


@pytest.mark.parametrize(
    ("record", "table"),
    [
        (RunRecord, Run),
        (StepRecord, Step),
        (LoadgenCountRecord, LoadgenCount),
        (LoadgenSampleRecord, LoadgenSample),
        (GpuSampleRecord, GpuSample),
        (RuntimeSampleRecord, RuntimeSample),
    ],
)
def test_every_field_of_the_other_records_is_a_column_and_every_other_column_fills_itself(
    record: type[BaseModel], table: type[Base]
) -> None:
    # These records are stored by field name (model_dump), so a field needs a column of its name, and a
    # column no record fills needs a default, NULL or an autoincrement.
    columns = table.__table__.columns
    assert set(record.model_fields) <= set(columns.keys())
    for column in columns:
        if column.name not in record.model_fields:
            assert column.nullable or column.server_default is not None or column.autoincrement is True, column.name


def test_decoding_gives_back_every_column_value() -> None:
    record = request_record(
        outcome=Outcome.HTTP_ERROR,
        http_status=500,
        error="line one\nline\ttwo \\ three\r",
        server_timings_ms={"total_ms": 85.5},
        chunk_tokens=[1, 2, 1],
        client_output_tokens=4,
    )
    (decoded,) = rows.decode_rows(rows.check_batch(rows.encode_batch([record])))
    assert decoded == rows.request_values(record)
    assert decoded["prompt_tokens"] is None and decoded["tokens_disagree"] is True
    assert decoded["error"] == "line one\nline\ttwo \\ three\r"


def test_a_row_is_one_line_of_tab_separated_fields_with_nulls_and_escapes() -> None:
    line = rows.encode_request(request_record(error="a\tb\nc\\d\0e", http_status=None))
    assert line.endswith("\n") and line.count("\n") == 1
    fields = line[:-1].split("\t")
    assert len(fields) == len(rows.REQUEST_COLUMNS)
    by_name = dict(zip(rows.REQUEST_COLUMNS, fields, strict=True))
    # PostgreSQL text holds no NUL: it becomes the replacement character.
    assert by_name["error"] == "a\\tb\\nc\\\\d\ufffde"
    assert (by_name["http_status"], by_name["in_warmup"], by_name["chunk_offsets_ns"]) == (
        "\\N",
        "f",
        "[50000000,60000000,80000000]",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b | {"count": 3}, "says 3 rows and holds 2"),
        (lambda b: b | {"rows": b["rows"][:-1]}, "holds 1 complete lines"),
        (lambda b: b | {"columns": [*b["columns"][:-1], "nope"]}, "unknown ['nope']"),
        (lambda b: b | {"columns": b["columns"][1:]}, "without id"),
        (lambda b: {"rows": b["rows"]}, "an object with the keys"),
        (lambda b: b | {"count": "2"}, "an integer count"),
    ],
)
def test_a_malformed_batch_is_refused_saying_why(change, message) -> None:
    batch = rows.encode_batch([request_record(), request_record()])
    with pytest.raises(rows.InvalidRows, match=message.replace("[", r"\[").replace("]", r"\]")):
        rows.check_batch(change(batch))


@pytest.mark.parametrize(
    ("column", "text", "message"),
    [
        ("id", "not-a-uuid", "line 2, column id"),
        ("step_index", "three", "line 2, column step_index"),
        ("in_warmup", "yes", "line 2, column in_warmup: not t or f"),
        ("chunk_offsets_ns", "[1,", "line 2, column chunk_offsets_ns"),
        ("error", "bad \\q escape", r"line 2, column error: unknown escape \\q"),
    ],
)
def test_a_bad_value_names_its_line_and_column(column: str, text: str, message: str) -> None:
    lines = [rows.encode_request(request_record(run_id=uuid.uuid4())) for _ in range(3)]
    fields = lines[1][:-1].split("\t")
    fields[list(rows.REQUEST_COLUMNS).index(column)] = text
    lines[1] = "\t".join(fields) + "\n"
    with pytest.raises(rows.InvalidRows, match=message):
        rows.decode_rows(rows.check_batch(rows.row_batch(lines)))


def test_a_line_with_missing_fields_is_refused() -> None:
    lines = [rows.encode_request(request_record())]
    lines[0] = lines[0].split("\t", 1)[1]
    with pytest.raises(rows.InvalidRows, match="line 1: 29 fields for 30 columns"):
        rows.decode_rows(rows.check_batch(rows.row_batch(lines)))
