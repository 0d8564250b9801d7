"""Read back what ingest left behind, independently of the ingest code: a fresh catalog for the
tables, a plain consumer for the dead-letter topic. The demo's accounting checks compare these
readings with what a feed report says was produced.

One simulator run is told apart from the rest of the demo's data by its ``(exchange, session)``:
every section that simulates gives its run a session of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pyiceberg.expressions import And, EqualTo

from k2.config import Settings
from k2.lake import TABLE_FOR_STREAM, open_catalog

__all__ = [
    "DeadLetterRead",
    "GapRange",
    "Identity",
    "count_files",
    "gap_ranges",
    "landed_identities",
    "read_dead_letters",
    "warehouse_footprint",
]

Identity = tuple[str, str, str, int, int]
"""(stream, exchange, symbol, session, seq), as ``FeedReport.valid_keys`` names a message."""
GapRange = tuple[str, str, str, int, int, int]
"""(stream, exchange, symbol, session, first_seq, last_seq)"""

_STREAM_OF_TABLE = {table: stream for stream, table in TABLE_FOR_STREAM.items()}


def _one_run(exchange: str, session: int) -> And:
    return And(EqualTo("exchange", exchange), EqualTo("session", session))


def landed_identities(settings: Settings, exchange: str, session: int) -> list[Identity]:
    """Every stored identity of one run, one entry per row (a message landed twice shows twice)."""
    catalog = open_catalog(settings.iceberg)
    out: list[Identity] = []
    for stream, name in TABLE_FOR_STREAM.items():
        rows = (
            catalog.load_table((settings.iceberg.namespace, name))
            .scan(row_filter=_one_run(exchange, session), selected_fields=("symbol", "seq"))
            .to_arrow()
        )
        out += [
            (stream, exchange, sym, session, seq)
            for sym, seq in zip(rows["symbol"].to_pylist(), rows["seq"].to_pylist(), strict=True)
        ]
    return out


def gap_ranges(settings: Settings, exchange: str, session: int) -> dict[str, set[GapRange]]:
    """``sequence_gaps`` rows of one run, grouped by status (``open``, ``filled``, ``lost``)."""
    catalog = open_catalog(settings.iceberg)
    rows = (
        catalog.load_table((settings.iceberg.namespace, "sequence_gaps"))
        .scan(row_filter=_one_run(exchange, session))
        .to_arrow()
        .to_pylist()
    )
    out: dict[str, set[GapRange]] = {}
    for r in rows:
        stream = _STREAM_OF_TABLE.get(r["table"], r["table"])
        out.setdefault(r["status"], set()).add(
            (stream, r["exchange"], r["symbol"], r["session"], r["first_seq"], r["last_seq"])
        )
    return out


@dataclass(frozen=True)
class DeadLetterRead:
    """One record of the DLQ topic: its ``k2.*`` headers (decoded) and the original value's size."""

    headers: dict[str, str]
    value_len: int

    @property
    def source(self) -> tuple[str, int, int]:
        h = self.headers
        return (
            h.get("k2.source.topic", ""),
            int(h.get("k2.source.partition", -1)),
            int(h.get("k2.source.offset", -1)),
        )


def read_dead_letters(settings: Settings, expected: int, timeout_s: float = 30.0) -> list[DeadLetterRead]:
    """Every record of the DLQ topic, from the beginning: polls until ``expected`` are read, then
    once more, so a record beyond the expected count would be read too."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"k2-demo-dlq-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    topic = settings.kafka.topics.dlq
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.partitions)])
    letters: list[DeadLetterRead] = []

    def poll(wait: float) -> None:
        for m in consumer.consume(1000, wait):
            if m.error() is None:
                headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
                letters.append(DeadLetterRead(headers, len(m.value() or b"")))

    try:
        for _ in range(int(timeout_s / 0.5)):
            poll(0.5)
            if len(letters) >= expected:
                poll(1.0)
                break
    finally:
        consumer.close()
    return letters


def warehouse_footprint(settings: Settings, tables: tuple[str, ...]) -> tuple[int, int]:
    """(Parquet bytes, rows) of the data files the current snapshots of ``tables`` hold."""
    catalog = open_catalog(settings.iceberg)
    size = rows = 0
    for name in tables:
        for task in catalog.load_table((settings.iceberg.namespace, name)).scan().plan_files():
            size += task.file.file_size_in_bytes
            rows += task.file.record_count
    return size, rows


def count_files(root: Path) -> int:
    """Files under ``root``: in a local warehouse, the objects a cloud store would have had PUT."""
    return sum(1 for p in root.rglob("*") if p.is_file())
