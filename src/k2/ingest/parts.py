"""What an ingest process opens before it consumes: the tables, one writer per market table, the DLQ.

Opened here, at the edge, and handed to ``IngestApp``, so the loop can be built around other parts
(tests, a benchmark) and nothing in it reaches for the catalog or a broker on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.table import Table

from k2.config import Settings, TopicNames
from k2.ingest.dlq import DeadLetterQueue
from k2.lake import TABLE_FOR_STREAM, TableWriter, ensure_tables, open_catalog
from k2.wire import Stream

__all__ = ["IngestParts", "open_parts", "stream_of_topic"]


@dataclass(frozen=True, slots=True)
class IngestParts:
    tables: dict[str, Table]  # by table name, including ``sequence_gaps``
    writers: dict[Stream, TableWriter]
    dlq: DeadLetterQueue


def stream_of_topic(topics: TopicNames) -> dict[str, Stream]:
    """The stream (and so the table) each configured data topic carries."""
    return {topics.trades: "trades", topics.quotes: "quotes", topics.reference: "reference"}


def open_parts(settings: Settings, writer_id: str) -> IngestParts:
    """Open (creating if needed) the tables and the DLQ producer for one ingest process.

    Raises:
        OffsetsMissing: a table holds rows but no snapshot says which offsets they cover.
    """
    topic_of = {stream: topic for topic, stream in stream_of_topic(settings.kafka.topics).items()}
    tables = ensure_tables(open_catalog(settings.iceberg), settings.iceberg)
    writers = {
        stream: TableWriter(tables[TABLE_FOR_STREAM[stream]], topic, writer_id)
        for stream, topic in topic_of.items()
    }
    for writer in writers.values():  # fail fast: rows without offsets is an operator decision
        writer.stored_offsets()
    dlq = DeadLetterQueue(
        settings.kafka.bootstrap_servers,
        settings.kafka.topics.dlq,
        writer_id,
        dict(settings.kafka.client_properties),
    )
    return IngestParts(tables, writers, dlq)
