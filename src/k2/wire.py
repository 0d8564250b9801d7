"""The wire format: what a market message looks like as JSON on a Kafka topic.

One msgspec Struct per stream is the single definition of a message. From it come the JSON that
feeds produce, the strict per-message decoder (used to explain rejects), the JSON Schema in
``docs/``, and the Arrow schema that the columnar hot path parses a whole batch into.

A market message is identified by ``(exchange, symbol, session, seq)``: ``seq`` counts per
exchange+symbol within a ``session`` (a trading day for ASX replay, ``YYYYMMDD`` of the exchange's
local date) and starts again at 1 in a new session. ``ts`` is the exchange event time in UTC
microseconds since the epoch; the ingest clock ``ingest_ts`` is added on ingest, never on the wire.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
import msgspec.inspect as mi
import pyarrow as pa

__all__ = [
    "REFERENCE_KINDS",
    "REQUIRED",
    "SCHEMA_VERSION",
    "STREAMS",
    "STRUCTS",
    "Quote",
    "Reference",
    "Stream",
    "Trade",
    "arrow_wire_schema",
    "encoder",
    "json_schema",
    "lenient_struct",
]

SCHEMA_VERSION = 1

Stream = Literal["trades", "quotes", "reference"]
STREAMS: tuple[Stream, ...] = ("trades", "quotes", "reference")

# Integer widths are part of the definition: they bound what the strict decoder accepts, appear as
# minimum/maximum in the JSON Schema, and choose the Arrow (and so Iceberg) column type.
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

ReferenceKind = Literal["listing", "dividend", "split", "merger"]
REFERENCE_KINDS: tuple[str, ...] = get_args(ReferenceKind)


class _Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    schema_version: Int32
    exchange: str
    symbol: str
    session: Int32
    seq: Int64
    ts: Int64  # exchange event time, UTC, microseconds since the epoch


class Trade(_Header, kw_only=True):
    price: float
    qty: Int64
    conditions: list[str] = []
    trade_id: str
    venue: str | None = None


class Quote(_Header, kw_only=True):
    bid: float | None = None  # None or absent: no bid on the book
    ask: float | None = None  # None or absent: no ask on the book
    bid_size: Int64
    ask_size: Int64


class Reference(_Header, kw_only=True):
    """Reference data: listings and corporate actions. ``kind`` says which fields are filled."""

    kind: ReferenceKind
    name: str | None = None
    isin: str | None = None
    currency: str | None = None
    amount: float | None = None
    gross_amount: float | None = None
    ratio: float | None = None
    # ISO dates (YYYY-MM-DD) in the exchange's own calendar.
    listed_from: str | None = None
    listed_to: str | None = None
    declared_date: str | None = None
    ex_date: str | None = None
    record_date: str | None = None
    pay_date: str | None = None


STRUCTS: dict[Stream, type[_Header]] = {"trades": Trade, "quotes": Quote, "reference": Reference}


def _fields(stream: Stream) -> tuple[mi.Field, ...]:
    info = mi.type_info(STRUCTS[stream])
    assert isinstance(info, mi.StructType)
    return info.fields


def _nullable(t: mi.Type) -> bool:
    return isinstance(t, mi.UnionType) and any(isinstance(m, mi.NoneType) for m in t.types)


def _value_type(t: mi.Type) -> mi.Type:
    """``X | None`` -> ``X``; the wire never uses any other union."""
    if isinstance(t, mi.UnionType):
        (inner,) = [m for m in t.types if not isinstance(m, mi.NoneType)]
        return inner
    return t


def _arrow_type(t: mi.Type) -> pa.DataType:
    t = _value_type(t)
    if isinstance(t, mi.IntType):
        return pa.int32() if t.ge is not None and t.ge >= -(2**31) else pa.int64()
    if isinstance(t, mi.FloatType):
        return pa.float64()
    if isinstance(t, mi.StrType | mi.LiteralType):
        return pa.string()
    if isinstance(t, mi.ListType):
        return pa.list_(_arrow_type(t.item_type))
    raise TypeError(f"no Arrow type for wire type {t!r}")


def _lenient_type(t: mi.Type) -> Any:
    """The Python type that accepts exactly the JSON Arrow's reader accepts for ``t``.

    Arrow checks JSON types and integer width, not values: a Literal is any string (its value is a
    validation rule, ``unknown_reference_kind``), and any list element may be null.
    """
    t = _value_type(t)
    if isinstance(t, mi.IntType):
        return Int32 if _arrow_type(t) == pa.int32() else Int64
    if isinstance(t, mi.FloatType):
        return float
    if isinstance(t, mi.StrType | mi.LiteralType):
        return str
    if isinstance(t, mi.ListType):
        return list[_lenient_type(t.item_type) | None]  # type: ignore[misc]
    raise TypeError(f"no lenient type for wire type {t!r}")


# Fields that must be present and non-null on the wire: those without a default. A field that is
# required but nullable cannot be told apart from an absent one in a columnar parse, so the wire
# has none (``bid``/``ask`` default to None).
REQUIRED: dict[Stream, tuple[str, ...]] = {
    stream: tuple(f.name for f in _fields(stream) if f.required) for stream in STREAMS
}
assert not any(_nullable(f.type) for s in STREAMS for f in _fields(s) if f.required)


def arrow_wire_schema(stream: Stream) -> pa.Schema:
    """The Arrow schema a batch of wire JSON for ``stream`` parses into (all fields nullable)."""
    return _ARROW[stream]


_ARROW: dict[Stream, pa.Schema] = {
    stream: pa.schema([pa.field(f.encode_name, _arrow_type(f.type)) for f in _fields(stream)])
    for stream in STREAMS
}


def lenient_struct(stream: Stream) -> type[msgspec.Struct]:
    """The wire struct with every field optional and only JSON types and widths checked.

    It decodes a message exactly when Arrow's reader can parse it into ``arrow_wire_schema``, so
    the message-by-message fallback and the columnar path agree; presence and values are left to
    the validation rules (``missing_field:<name>``, ``unknown_reference_kind``...).
    """
    return _LENIENT[stream]


_LENIENT: dict[Stream, type[msgspec.Struct]] = {
    stream: msgspec.defstruct(
        f"Lenient{STRUCTS[stream].__name__}",
        [(f.encode_name, _lenient_type(f.type) | None, None) for f in _fields(stream)],
        kw_only=True,
    )
    for stream in STREAMS
}


def json_schema(stream: Stream) -> dict[str, object]:
    """JSON Schema of the wire message for ``stream`` (written to docs/ by ``k2 schema``)."""
    schema: dict[str, object] = msgspec.json.schema(STRUCTS[stream])
    return schema


encoder = msgspec.json.Encoder()
