"""A ``QueryResult`` as bytes on the wire: JSON, CSV, Arrow IPC stream or Parquet.

The format is ``?format=`` if given, else the best match of the ``Accept`` header, else JSON.
Whatever the format, the answer says what it covers: in the body for JSON (``coverage``), in the
schema metadata for Arrow and Parquet (``k2.coverage``), and in ``X-K2-*`` headers for all four
(``X-K2-Coverage`` holds the whole coverage as compact JSON, so CSV loses nothing).

JSON is written for JavaScript readers: timestamps are ISO-8601 UTC strings (``...Z``), dates
``YYYY-MM-DD``, NaN and infinities ``null``, and integer *identifiers* (``seq``, ``kafka_offset``,
``*_id``, ``*_seq``, ``*_offset``) strings, because a 64-bit id does not survive a double.
Quantities (``qty``, ``volume``, ``trades``) stay numbers. CSV writes the same timestamps and
renders list columns (``conditions``) as JSON text; Arrow and Parquet keep the native types.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
from datetime import UTC, date, datetime, time
from enum import Enum, StrEnum
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.responses import Response

from k2.errors import QueryRejected
from k2.query.result import QueryResult

__all__ = [
    "COVERAGE_METADATA_KEY",
    "Format",
    "coverage_headers",
    "encode",
    "json_rows",
    "json_safe",
    "negotiate",
]

COVERAGE_METADATA_KEY = b"k2.coverage"
_ID_NAMES = frozenset({"seq", "kafka_offset", "offset", "snapshot_id", "trade_id"})
_ID_SUFFIXES = ("_id", "_seq", "_offset")
_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the fraction the unit has (.123456 for us)


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"
    ARROW = "arrow"
    PARQUET = "parquet"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self]


_MEDIA_TYPES = {
    Format.JSON: "application/json",
    Format.CSV: "text/csv",
    Format.ARROW: "application/vnd.apache.arrow.stream",
    Format.PARQUET: "application/vnd.apache.parquet",
}
_BY_MEDIA_TYPE = {
    **{media: fmt for fmt, media in _MEDIA_TYPES.items()},
    "application/x-parquet": Format.PARQUET,
    "application/*": Format.JSON,
    "text/*": Format.CSV,
    "*/*": Format.JSON,
}


def negotiate(format_param: str | None, accept: str | None) -> Format | None:
    """The response format, or None when the ``Accept`` header admits none of them (406).

    Raises:
        QueryRejected: ``unknown_format`` for a ``?format=`` that is not one of the four.
    """
    if format_param is not None:
        try:
            return Format(format_param.strip().lower())
        except ValueError:
            known = ", ".join(f.value for f in Format)
            raise QueryRejected(
                "unknown_format", f"format must be one of {known}, got {format_param!r}"
            ) from None
    if not accept or not accept.strip():
        return Format.JSON
    best: tuple[float, int, Format] | None = None
    for order, item in enumerate(accept.split(",")):
        media, _, params = item.strip().partition(";")
        fmt = _BY_MEDIA_TYPE.get(media.strip().lower())
        q = _quality(params)
        if fmt is None or q <= 0:
            continue
        # Highest q wins; among equals, the first listed (negative order sorts it higher).
        if best is None or (q, -order) > (best[0], best[1]):
            best = (q, -order, fmt)
    return best[2] if best else None


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if math.isfinite(q) else 0.0
    return 1.0


def encode(result: QueryResult, fmt: Format) -> Response:
    headers = coverage_headers(result)
    if fmt is Format.JSON:
        body = {
            "rows": json_rows(result.rows),
            "coverage": result.coverage.to_json(),
            "truncated": result.truncated,
            "next_cursor": result.next_cursor,
        }
        content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    elif fmt is Format.CSV:
        content = _csv_bytes(result.rows)
    elif fmt is Format.ARROW:
        content = _arrow_bytes(_with_coverage_metadata(result))
    else:
        content = _parquet_bytes(_with_coverage_metadata(result))
    return Response(content=content, media_type=fmt.media_type, headers=headers)


def coverage_headers(result: QueryResult) -> dict[str, str]:
    cov = result.coverage
    snapshots = ",".join(f"{t}={s if s is not None else 'none'}" for t, s in sorted(cov.snapshots.items()))
    headers = {
        "X-K2-Coverage": json.dumps(cov.to_json(), separators=(",", ":"), ensure_ascii=True),
        "X-K2-Snapshots": snapshots,
        "X-K2-Complete": _bool(cov.complete),
        "X-K2-Truncated": _bool(result.truncated),
    }
    if cov.as_of is not None:
        headers["X-K2-As-Of"] = quote(cov.as_of, safe=":+-.")
    if result.next_cursor is not None:
        # Cursors are opaque URL-safe text; quoting only matters for one that is not.
        headers["X-K2-Next-Cursor"] = quote(result.next_cursor, safe="-_.~=")
    return headers


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _with_coverage_metadata(result: QueryResult) -> pa.Table:
    metadata = dict(result.rows.schema.metadata or {})
    metadata[COVERAGE_METADATA_KEY] = json.dumps(result.coverage.to_json()).encode()
    metadata[b"k2.truncated"] = _bool(result.truncated).encode()
    if result.next_cursor is not None:
        metadata[b"k2.next_cursor"] = result.next_cursor.encode()
    return result.rows.replace_schema_metadata(metadata)


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _csv_bytes(table: pa.Table) -> bytes:
    columns = [_csv_column(field, table.column(i)) for i, field in enumerate(table.schema)]
    flat = pa.table(columns, names=table.column_names) if columns else table
    sink = io.BytesIO()
    pacsv.write_csv(flat, sink)
    return sink.getvalue()


def _csv_column(field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    t = field.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if pa.types.is_timestamp(t):
        return _iso_utc(column)
    if _is_nested(t):
        return pa.array([_json_text(v) for v in _plain_list(field.name, column)], pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.array(_plain_list(field.name, column), pa.string())  # base64
    return column


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, converted column by column (see the module docstring)."""
    names = table.column_names
    columns = [_json_column(field, table.column(i)) for i, field in enumerate(table.schema)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _json_column(field: pa.Field, column: pa.ChunkedArray) -> list[Any]:
    t = field.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if pa.types.is_timestamp(t):
        return list(_iso_utc(column).to_pylist())
    if pa.types.is_integer(t) and _is_identifier(field.name):
        return [None if v is None else str(v) for v in column.to_pylist()]
    if pa.types.is_floating(t):
        return [None if v is None or not math.isfinite(v) else v for v in column.to_pylist()]
    if pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_decimal(t) or pa.types.is_duration(t):
        return [None if v is None else _scalar_text(v) for v in column.to_pylist()]
    return _plain_list(field.name, column)


def _iso_utc(column: pa.ChunkedArray) -> pa.ChunkedArray:
    unit = column.type.unit
    # Naive timestamps are UTC by k2's convention; zoned ones are converted to it.
    return pc.strftime(column.cast(pa.timestamp(unit, tz="UTC")), format=_ISO_UTC)


def _is_identifier(name: str) -> bool:
    name = name.lower()
    return name in _ID_NAMES or name.endswith(_ID_SUFFIXES)


def _is_nested(t: pa.DataType) -> bool:
    return bool(pa.types.is_nested(t))


def _plain_list(name: str, column: pa.ChunkedArray) -> list[Any]:
    return [_plain(name, v) for v in column.to_pylist()]


def json_safe(value: Any) -> Any:
    """Any JSON-like Python value (the engine's status) made safe by the same rules as rows."""
    return _plain("", value)


def _plain(name: str, value: Any) -> Any:
    """A Python value from ``to_pylist`` made JSON-safe (nested lists, structs, maps)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Enum):
        return _plain(name, value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(name, dataclasses.asdict(value))
    if isinstance(value, int):
        return str(value) if _is_identifier(name) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _plain(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(kv, tuple) and len(kv) == 2 for kv in value):
            return {str(k): _plain(str(k), v) for k, v in value}  # a map column
        return [_plain(name, v) for v in value]
    return _scalar_text(value)


def _scalar_text(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)
