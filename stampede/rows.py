"""Request rows on the wire: a batch of ``requests`` rows in PostgreSQL's COPY text format.

A Locust process turns each record into its row once (raw fields plus the derived values the record
computes, see :mod:`stampede.metrics`) and sends a batch as one string: one line per row, fields
separated by tabs, ``\\N`` for NULL, backslash escapes for backslash, tab, newline and carriage
return. A worker on PostgreSQL hands that string to ``COPY`` unchanged, so storing a record costs
the worker almost no Python; the server checks every value against its column type and names the
line and column of a bad one. SQLite decodes the same text with :func:`decode_rows`.

The batch names its columns, so a worker of a newer schema stores an older producer's rows (the
missing columns take their defaults), and it counts its rows, so a truncated string is refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypedDict

import orjson

from stampede import metrics
from stampede.records import RequestRecord

# The ``requests`` columns and their PostgreSQL types, in table order.
REQUEST_COLUMNS = {
    "id": "uuid",
    "run_id": "uuid",
    "target": "text",
    "step_index": "int4",
    "in_warmup": "bool",
    "host": "text",
    "pid": "int4",
    "api": "text",
    "model": "text",
    "prompt_id": "text",
    "outcome": "text",
    "http_status": "int4",
    "server_request_id": "text",
    "error": "text",
    "started_at": "timestamptz",
    "ttft_ms": "float8",
    "e2e_ms": "float8",
    "tpot_ms": "float8",
    "prompt_tokens": "int4",
    "output_tokens": "int4",
    "output_chunks": "int4",
    "chunk_offsets_ns": "json",
    "chunk_tokens": "json",
    "client_output_tokens": "int4",
    "server_timings_ms": "json",
    "send_delay_ms": "float8",
    "response_ms": "float8",
    "tokens_disagree": "bool",
    "late_chunks": "json",
    "reconnects": "int4",
}
NULL = "\\N"

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\ufffd"})
_UNESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


class RowBatch(TypedDict):
    """The argument of the store job: column names, row count, and the rows as COPY text."""

    columns: list[str]
    count: int
    rows: str


class InvalidRows(ValueError):
    """A batch that cannot be stored as it is; the message says which line and column."""


def request_values(record: RequestRecord) -> tuple[Any, ...]:
    """The ``requests`` row of a record in :data:`REQUEST_COLUMNS` order, as Python values: raw
    fields plus the derived values used in SQL, as the record computes them."""
    return (
        record.id,
        record.run_id,
        record.target,
        record.step_index,
        record.in_warmup,
        record.host,
        record.pid,
        record.api.value,
        record.model,
        record.prompt_id,
        record.outcome.value,
        record.http_status,
        record.server_request_id,
        record.error,
        record.started_at,
        record.ttft_ms,
        record.e2e_ms,
        record.tpot_ms,
        record.prompt_tokens,
        record.output_tokens,
        len(record.chunk_offsets_ns),
        record.chunk_offsets_ns,
        record.chunk_tokens,
        record.client_output_tokens,
        record.server_timings_ms,
        record.send_delay_ns / metrics.NS_PER_MS,
        record.response_ms,
        record.tokens_disagree,
        record.late_chunks,
        record.reconnects,
    )


def _field(value: Any) -> str:
    if value is None:
        return NULL
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL; a server's garbled error message may.
        return value.translate(_ESCAPES)
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode().translate(_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # int, float (repr round-trips), UUID


def encode_request(record: RequestRecord) -> str:
    """One record's row as a line of COPY text, newline included."""
    return "\t".join(map(_field, request_values(record))) + "\n"


def row_batch(lines: list[str], columns: list[str] | None = None) -> RowBatch:
    """The job argument for rows made by :func:`encode_request`, or by an older version whose
    ``columns`` were others."""
    return {"columns": columns or list(REQUEST_COLUMNS), "count": len(lines), "rows": "".join(lines)}


def encode_batch(records: Iterable[RequestRecord]) -> RowBatch:
    """The job argument for a batch of records."""
    return row_batch([encode_request(r) for r in records])


def check_batch(batch: Any) -> RowBatch:
    """The batch, once its shape is known good: known, distinct columns including ``id``, and
    exactly ``count`` lines. Values are checked by whoever decodes them (PostgreSQL's COPY or
    :func:`decode_rows`)."""
    if not isinstance(batch, dict) or set(batch) != set(RowBatch.__annotations__):
        raise InvalidRows(f"a row batch is an object with the keys {sorted(RowBatch.__annotations__)}")
    columns, count, rows = batch["columns"], batch["count"], batch["rows"]
    if not isinstance(columns, list) or not isinstance(count, int) or not isinstance(rows, str):
        raise InvalidRows("a row batch has a list of columns, an integer count and a string of rows")
    unknown = [c for c in columns if c not in REQUEST_COLUMNS]
    if unknown or len(set(columns)) != len(columns) or "id" not in columns:
        raise InvalidRows(f"bad column list {columns}: unknown {unknown}, or repeated, or without id")
    lines = rows.count("\n")
    if lines != count or (rows and not rows.endswith("\n")):
        raise InvalidRows(f"the batch says {count} rows and holds {lines} complete lines")
    return batch  # type: ignore[return-value]


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    try:
        return _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], text)
    except KeyError as exc:
        raise ValueError(f"unknown escape \\{exc.args[0]}") from None


def _parse_bool(text: str) -> bool:
    if text not in ("t", "f"):
        raise ValueError(f"not t or f: {text!r}")
    return text == "t"


_PARSERS: dict[str, Callable[[str], Any]] = {
    "uuid": uuid.UUID,
    "text": _unescape,
    "int4": int,
    "bool": _parse_bool,
    "timestamptz": datetime.fromisoformat,
    "float8": float,
    "json": lambda text: orjson.loads(_unescape(text)),
}


def decode_rows(batch: RowBatch) -> list[dict[str, Any]]:
    """The rows of a checked batch as column-to-value mappings; raises :class:`InvalidRows`."""
    columns = batch["columns"]
    parsers = [_PARSERS[REQUEST_COLUMNS[c]] for c in columns]
    rows = []
    # Split on newlines only: str.splitlines would also split on characters a text value may hold.
    for number, line in enumerate(batch["rows"].split("\n")[:-1], start=1):
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise InvalidRows(f"line {number}: {len(fields)} fields for {len(columns)} columns")
        row = {}
        for column, parse, text in zip(columns, parsers, fields, strict=True):
            try:
                row[column] = None if text == NULL else parse(text)
            except ValueError as exc:
                raise InvalidRows(f"line {number}, column {column}: {exc}") from None
        rows.append(row)
    return rows
