"""The Kafka consumer settings ingest runs with, shared with the benchmark's bare-consume ceiling.

The ceiling must read Kafka exactly as fast as ingest could, or the ratio flatters k2. The one that
matters most is ``fetch.queue.backoff.ms``: librdkafka stops fetching a partition whose local queue
is above ``queued.min.messages`` and, by default, waits a whole second before looking again. A
consumer draining 50k-message batches trips that on every fetch; on this machine the bare
``consume(10000)`` loop ran at 150-270k msg/s with the default and 340-475k with 10 ms.
"""

from __future__ import annotations

from typing import Any

from k2.config import KafkaSettings

__all__ = ["THROUGHPUT_DEFAULTS", "consumer_config"]

THROUGHPUT_DEFAULTS: dict[str, Any] = {
    "fetch.max.bytes": 64 << 20,
    "max.partition.fetch.bytes": 8 << 20,
    "queued.max.messages.kbytes": 256 << 10,
    "queued.min.messages": 1_000_000,
    "fetch.queue.backoff.ms": 10,
    # When caught up, wait for 1 MiB or 100 ms instead of a fetch round trip per few messages:
    # fewer requests for the broker and for us, at most 100 ms added to a row's visibility.
    "fetch.min.bytes": 1 << 20,
    "fetch.wait.max.ms": 100,
}


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Throughput defaults, then ``kafka.client_properties``, then ``overrides`` (k2's own rules)."""
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": group_id,
        **THROUGHPUT_DEFAULTS,
        **kafka.client_properties,
        **overrides,
    }
