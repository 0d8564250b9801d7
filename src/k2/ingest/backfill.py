"""Reading deferred ranges back from Kafka, for the backfill of shed messages.

Shed messages stay in Kafka; the deferred ledger names the records that hold them. The backfill
reader is a second consumer in the ingest process, outside the consumer group (``assign`` only,
no offsets committed), owned by the processing thread, so it never meets the fetch thread's
consumer. It reads a bounded chunk of one range per call; the ingest loop decides when (only at
SOFT or better, and only while the live lag is small, so backfill cannot push the level up again)
and lands the chunk through the same validation, sequencing and commit path as live messages.

A range that Kafka's retention has already deleted (its first offset is below the partition's low
watermark) cannot be backfilled: :class:`Chunk` reports the offsets below the low watermark as
lost, and the caller records that, loudly, instead of waiting for records that will never come.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition

__all__ = ["BackfillReader", "Chunk"]


@dataclass(slots=True)
class Chunk:
    """Records ``first..read_to`` of one partition as read now (``read_to < first``: none yet).

    ``lost_to``: every offset in ``first..lost_to`` is gone from Kafka (retention); -1 if none.
    """

    topic: str
    partition: int
    first: int
    read_to: int
    lost_to: int = -1
    messages: list[Message] = field(default_factory=list)


class BackfillReader:
    def __init__(self, bootstrap: str, properties: Mapping[str, object] | None = None, batch: int = 5_000):
        self._conf = {
            **(properties or {}),
            "bootstrap.servers": bootstrap,
            "group.id": "k2-backfill",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Reads a chunk at a time: a small prefetch keeps its memory out of the live path's way.
            "queued.min.messages": 2 * batch,
            "queued.max.messages.kbytes": 32 << 10,
        }
        self._batch = batch
        self._consumer: Consumer | None = None
        self._at: tuple[str, int, int] | None = None  # (topic, partition, next offset) assigned

    def read(self, topic: str, partition: int, first: int, last: int, timeout: float = 0.25) -> Chunk:
        """Up to ``batch`` records of ``first..last``, in offset order, and what is lost of it."""
        consumer = self._consumer or Consumer(self._conf)
        self._consumer = consumer
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        chunk = Chunk(topic, partition, first, first - 1)
        if low > first:
            chunk.lost_to = min(last, low - 1)
            chunk.read_to = chunk.lost_to
            return chunk
        last = min(last, high - 1)  # the ledger never names records beyond the high watermark
        if last < first:
            return chunk
        if self._at != (topic, partition, first):
            consumer.assign([TopicPartition(topic, partition, first)])
        deadline = time.monotonic() + timeout
        overshot = False
        while chunk.read_to < last and len(chunk.messages) < self._batch and time.monotonic() < deadline:
            for m in consumer.consume(self._batch, 0.05):
                if m.error() is not None:
                    continue
                offset = m.offset()
                if offset is None or offset > last:
                    overshot = True  # read past the range: the next read must seek again
                    continue
                chunk.messages.append(m)
                chunk.read_to = offset
        self._at = None if overshot else (topic, partition, chunk.read_to + 1)
        return chunk

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._at = None
