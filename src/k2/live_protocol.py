"""What ingest's live endpoint and the API's live client say to each other (Arrow Flight).

Both sides import this module and nothing of each other, so the query package does not depend on
ingest internals. A ``LiveTicket`` is the JSON a DoGet carries; the answer is an Arrow stream whose
schema metadata says what the rows cover, per Kafka partition of the table's topic that the
answering process owns:

- ``floor``: every offset below it is in Iceberg (committed and visible), so a reader takes the
  rows of ``[floor, consumed)`` from this stream and everything before from the snapshot;
- ``consumed``: the next offset after the last buffered row.

Rows, partitions and process facts are taken under one lock on the ingest side, so they agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = [
    "PARTITIONS_KEY",
    "PING_ACTION",
    "PROCESS_KEY",
    "LiveTicket",
    "LiveView",
    "PartitionLive",
    "decode_coverage",
    "encode_coverage",
]

PARTITIONS_KEY = b"k2.partitions"
PROCESS_KEY = b"k2.process"
PING_ACTION = "ping"


@dataclass(frozen=True, slots=True)
class PartitionLive:
    """Offsets of one Kafka partition: ``[0, floor)`` is in Iceberg, ``[floor, consumed)`` buffered."""

    floor: int
    consumed: int


@dataclass(slots=True)
class LiveView:
    """One consistent look at one table's live buffer in one ingest process.

    ``schema`` is the table's Arrow schema, given even when ``chunks`` is empty so an empty answer
    still has its columns; every chunk has that schema. ``process`` holds small JSON-able facts
    (writer id, pid, degradation level and its name).
    """

    schema: pa.Schema
    chunks: list[pa.Table] = field(default_factory=list)
    partitions: dict[int, PartitionLive] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveTicket:
    """Which rows of one table to send: ``symbols`` (None: all), ``ts`` in ``[start_us, end_us)``
    (epoch microseconds, UTC; None: unbounded) and ``columns`` (None: all, in schema order)."""

    table: str
    symbols: tuple[str, ...] | None = None
    start_us: int | None = None
    end_us: int | None = None
    columns: tuple[str, ...] | None = None
    last: int | None = None  # only the newest ``last`` matching rows by ts

    def encode(self) -> bytes:
        return json.dumps(
            {
                "table": self.table,
                "symbols": None if self.symbols is None else list(self.symbols),
                "start_us": self.start_us,
                "end_us": self.end_us,
                "columns": None if self.columns is None else list(self.columns),
                "last": self.last,
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> LiveTicket:
        """Raises:
        ValueError: ``raw`` is not a ticket, saying which field is wrong.
        """
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"ticket is not JSON: {e}") from e
        if not isinstance(doc, dict):
            raise ValueError("ticket must be a JSON object")
        unknown = set(doc) - {"table", "symbols", "start_us", "end_us", "columns", "last"}
        if unknown:
            raise ValueError(f"ticket has unknown keys {sorted(unknown)}")
        table = doc.get("table")
        if not isinstance(table, str) or not table:
            raise ValueError("ticket.table must be a non-empty string")
        return cls(
            table=table,
            symbols=_strings(doc.get("symbols"), "symbols"),
            start_us=_micros(doc.get("start_us"), "start_us"),
            end_us=_micros(doc.get("end_us"), "end_us"),
            columns=_strings(doc.get("columns"), "columns"),
            last=_count(doc.get("last")),
        )


def encode_coverage(partitions: dict[int, PartitionLive], process: dict[str, Any]) -> dict[bytes, bytes]:
    """Schema metadata of a live answer."""
    parts = {str(p): {"floor": v.floor, "consumed": v.consumed} for p, v in sorted(partitions.items())}
    return {
        PARTITIONS_KEY: json.dumps(parts).encode(),
        PROCESS_KEY: json.dumps(process, default=str).encode(),
    }


def decode_coverage(schema: pa.Schema) -> tuple[dict[int, PartitionLive], dict[str, Any]]:
    """Partitions and process facts from a live answer's schema metadata.

    Raises:
        ValueError: the metadata is missing or malformed (not a k2 live endpoint).
    """
    meta = schema.metadata or {}
    if PARTITIONS_KEY not in meta or PROCESS_KEY not in meta:
        raise ValueError("answer has no k2.partitions / k2.process schema metadata")
    try:
        parts = json.loads(meta[PARTITIONS_KEY])
        process = json.loads(meta[PROCESS_KEY])
        partitions = {
            int(p): PartitionLive(floor=int(v["floor"]), consumed=int(v["consumed"]))
            for p, v in parts.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"malformed k2 live metadata: {e!r}") from e
    if not isinstance(process, dict):
        raise ValueError("k2.process metadata is not a JSON object")
    return partitions, process


def _strings(value: object, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"ticket.{name} must be null or a list of strings")
    return tuple(value)


def _count(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("ticket.last must be null or a positive integer")


def _micros(value: object, name: str) -> int | None:
    # bool is an int in Python; a ticket saying "start_us": true is a bug, not epoch + 1 us.
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"ticket.{name} must be null or an integer (epoch microseconds)")
