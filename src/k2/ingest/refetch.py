"""Read given Kafka records again, by (partition, offset), for a dead letter of the original bytes.

Rows set aside at commit time (``k2.lake.probe``) no longer hold the message they came from; the
DLQ promises the original key, value and headers, and Kafka still has them. A short-lived consumer
outside the consumer group (``assign``, no offsets committed) reads each partition from the lowest
wanted offset up to the highest. A rare path: it runs only when a commit failed on data.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, Message, TopicPartition

__all__ = ["fetch_records"]


def fetch_records(
    bootstrap: str,
    topic: str,
    coordinates: Iterable[tuple[int, int]],
    properties: Mapping[str, object] | None = None,
    timeout: float = 30.0,
) -> dict[tuple[int, int], Message]:
    """The records at ``coordinates`` (partition, offset) of ``topic`` that Kafka still holds.

    A record retention has deleted is simply absent from the result; the caller decides what a
    dead letter without its original says.
    """
    wanted: dict[int, set[int]] = defaultdict(set)
    for p, o in coordinates:
        wanted[p].add(o)
    if not wanted:
        return {}
    consumer = Consumer(
        {
            **(properties or {}),
            "bootstrap.servers": bootstrap,
            "group.id": "k2-refetch",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    found: dict[tuple[int, int], Message] = {}
    try:
        consumer.assign([TopicPartition(topic, p, min(offsets)) for p, offsets in wanted.items()])
        last = {p: max(offsets) for p, offsets in wanted.items()}
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(wanted) and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                p = m.partition()
                if m.error() is not None:  # end of partition: nothing more to find there
                    if p is not None:
                        done.add(p)
                    continue
                o = m.offset()
                if o in wanted.get(p, ()):
                    found[(p, o)] = m
                if o >= last[p]:
                    done.add(p)
    finally:
        consumer.close()
    return found
