"""Original records read again by coordinates, for dead letters of rows a commit set aside."""

from __future__ import annotations

from confluent_kafka import Producer

from k2.config import Settings
from k2.ingest.refetch import fetch_records


def test_records_are_read_again_by_partition_and_offset_with_key_value_and_headers(
    k2_settings: Settings,
) -> None:
    topic = k2_settings.kafka.topics.trades
    producer = Producer({"bootstrap.servers": k2_settings.kafka.bootstrap_servers})
    for i in range(30):
        producer.produce(topic, key=b"BHP", value=f"v{i}".encode(), partition=i % 2, headers=[("h", None)])
    assert producer.flush(30) == 0
    # partition 0 holds v0, v2, v4... at offsets 0, 1, 2...; partition 1 holds v1, v3...
    found = fetch_records(k2_settings.kafka.bootstrap_servers, topic, [(0, 3), (1, 0), (1, 14), (0, 99)])
    assert sorted(found) == [(0, 3), (1, 0), (1, 14)], "an offset beyond the log is simply absent"
    assert found[(0, 3)].value() == b"v6" and found[(1, 14)].value() == b"v29"
    assert found[(1, 0)].key() == b"BHP" and found[(1, 0)].headers() == [("h", None)]
