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
from enum import Enum
from operator import attrgetter
from typing import Any, TypedDict

import orjson
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String, Uuid
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.types import TypeEngine

from stampede import metrics
from stampede.records import RequestRecord
from stampede.schema import Request

# PostgreSQL's name for each column type of the ``requests`` table, as COPY and the SQLite decoder
# read it. Checked in this order: BigInteger is an Integer, and JSON is no String.
_TYPE_NAMES: list[tuple[type[TypeEngine[Any]], str]] = [
    (Uuid, "uuid"),
    (Boolean, "bool"),
    (BigInteger, "int8"),
    (Integer, "int4"),
    (DateTime, "timestamptz"),
    (Float, "float8"),
    (JSON, "json"),
    (String, "text"),
]


def _type_name(column: KeyedColumnElement[Any]) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(column.type, kind):
            return name
    raise TypeError(f"requests.{column.key}: no COPY type for {column.type!r}")


REQUEST_COLUMNS: dict[str, str] = {column.name: _type_name(column) for column in Request.__table__.columns}
"""The ``requests`` columns and their PostgreSQL types, in table order: read from the table itself."""

# Columns whose value is not the record's field (or computed field) of the same name.
DERIVED_COLUMNS: dict[str, Callable[[RequestRecord], Any]] = {
    "output_chunks": lambda record: len(record.chunk_offsets_ns),
    "send_delay_ms": lambda record: record.send_delay_ns / metrics.NS_PER_MS,
}
UNSTORED_FIELDS = frozenset({"end_offset_ns", "send_delay_ns", "itl_ms"})
"""Record fields with no column of their own: stored through the derived values above (``e2e_ms``,
``send_delay_ms``), or recomputed from stored ones (``itl_ms`` from the chunk offsets)."""


def _getter(column: str) -> Callable[[RequestRecord], Any]:
    if column in DERIVED_COLUMNS:
        return DERIVED_COLUMNS[column]
    field = RequestRecord.model_fields.get(column)
    if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, Enum):
        return lambda record: getattr(record, column).value
    if field is not None or column in RequestRecord.model_computed_fields:
        return attrgetter(column)
    raise TypeError(f"requests.{column} is neither a RequestRecord field nor one of DERIVED_COLUMNS")


# Built once, at import: a column no record can fill fails here, not on the first batch of a run.
_GETTERS = [(column, _getter(column)) for column in REQUEST_COLUMNS]
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


def request_values(record: RequestRecord) -> dict[str, Any]:
    """The ``requests`` row of a record, by column in :data:`REQUEST_COLUMNS` order, as Python
    values: raw fields plus the derived values used in SQL, as the record computes them."""
    return {column: get(record) for column, get in _GETTERS}


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
    return "\t".join([_field(get(record)) for _, get in _GETTERS]) + "\n"


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
    return batch  # type: ignore[return-value]  # checked above, key by key


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
    "int8": int,
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
