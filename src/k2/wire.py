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

from typing import Literal

import msgspec
import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "STREAMS",
    "Quote",
    "Reference",
    "Stream",
    "Trade",
    "arrow_wire_schema",
    "encoder",
    "json_schema",
]

SCHEMA_VERSION = 1

Stream = Literal["trades", "quotes", "reference"]
STREAMS: tuple[Stream, ...] = ("trades", "quotes", "reference")


class _Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    schema_version: int
    exchange: str
    symbol: str
    session: int
    seq: int
    ts: int  # exchange event time, UTC, microseconds since the epoch


class Trade(_Header, kw_only=True):
    price: float
    qty: int
    conditions: list[str] = []
    trade_id: str
    venue: str | None = None


class Quote(_Header, kw_only=True):
    bid: float | None  # None: no bid on the book
    ask: float | None  # None: no ask on the book
    bid_size: int
    ask_size: int


class Reference(_Header, kw_only=True):
    """Reference data: listings and corporate actions. ``kind`` says which fields are filled."""

    kind: Literal["listing", "dividend", "split", "merger"]
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

_HEADER_FIELDS: list[pa.Field] = [
    pa.field("schema_version", pa.int32()),
    pa.field("exchange", pa.string()),
    pa.field("symbol", pa.string()),
    pa.field("session", pa.int32()),
    pa.field("seq", pa.int64()),
    pa.field("ts", pa.int64()),
]

_ARROW_BODY: dict[Stream, list[pa.Field]] = {
    "trades": [
        pa.field("price", pa.float64()),
        pa.field("qty", pa.int64()),
        pa.field("conditions", pa.list_(pa.string())),
        pa.field("trade_id", pa.string()),
        pa.field("venue", pa.string()),
    ],
    "quotes": [
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("bid_size", pa.int64()),
        pa.field("ask_size", pa.int64()),
    ],
    "reference": [
        pa.field("kind", pa.string()),
        pa.field("name", pa.string()),
        pa.field("isin", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("gross_amount", pa.float64()),
        pa.field("ratio", pa.float64()),
        pa.field("listed_from", pa.string()),
        pa.field("listed_to", pa.string()),
        pa.field("declared_date", pa.string()),
        pa.field("ex_date", pa.string()),
        pa.field("record_date", pa.string()),
        pa.field("pay_date", pa.string()),
    ],
}

# Fields that must be present and non-null on the wire (the rest may be null or absent).
REQUIRED: dict[Stream, tuple[str, ...]] = {
    "trades": ("schema_version", "exchange", "symbol", "session", "seq", "ts", "price", "qty", "trade_id"),
    "quotes": ("schema_version", "exchange", "symbol", "session", "seq", "ts", "bid_size", "ask_size"),
    "reference": ("schema_version", "exchange", "symbol", "session", "seq", "ts", "kind"),
}


def arrow_wire_schema(stream: Stream) -> pa.Schema:
    """The Arrow schema a batch of wire JSON for ``stream`` parses into (all fields nullable)."""
    return pa.schema(_HEADER_FIELDS + _ARROW_BODY[stream])


def json_schema(stream: Stream) -> dict[str, object]:
    """JSON Schema of the wire message for ``stream`` (written to docs/ by ``k2 schema``)."""
    schema: dict[str, object] = msgspec.json.schema(STRUCTS[stream])
    return schema


encoder = msgspec.json.Encoder()
