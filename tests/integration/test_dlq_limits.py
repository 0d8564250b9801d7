"""The DLQ holds whatever the source topics hold, against the real broker (16 MiB record batches).

A record as large as ``trades`` accepts must be dead-lettered whole; a DLQ topic someone made
smaller gets a cut record with the headers that say so, and ``flush`` does not fail on it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from k2.broker import delete_topics, ensure_k2_topics, ensure_topics
from k2.broker.topics import DLQ_HEADROOM_BYTES, admin_client, max_message_bytes
from k2.config import Settings, TopicNames
from k2.ingest.dlq import DeadLetter, DeadLetterQueue

MiB = 1 << 20
BROKER_LIMIT = 16 * MiB  # message.max.bytes of the local broker
SMALL_DLQ = 100 * 1024
SOURCE_HEADERS: list[tuple[str, bytes | None]] = [("trace", None), ("src", b"feed-1")]


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> Message | KafkaError:
    """Produce one record and return the delivered message, or the error it failed with."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 64 * MiB, "linger.ms": 0})
    outcome: list[Message | KafkaError] = []
    producer.produce(
        topic, key=key, value=value, headers=SOURCE_HEADERS, on_delivery=lambda e, m: outcome.append(e or m)
    )
    assert producer.flush(30) == 0
    return outcome[0]


def _read(bootstrap: str, topic: str, partitions: int, expected: int) -> list[Message]:
    """The topic's records in (partition, offset) order, after ``expected`` of them arrived."""
    # Consumer defaults suffice for a 16 MiB record: fetch.max.bytes and max.partition.fetch.bytes
    # are soft limits (KIP-74), the first record batch is always returned whole.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "dlq-probe", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(10, 0.5):
                assert m.error() is None, m.error()
                got.append(m)
        got += consumer.consume(10, 1.0)  # nothing beyond what was expected
    finally:
        consumer.close()
    return sorted(got, key=lambda m: (m.partition(), m.offset()))


def _letter(value: bytes, partition: int = 0, offset: int = 0) -> DeadLetter:
    return DeadLetter(
        "trades",
        partition,
        offset,
        b"BHP",
        value,
        SOURCE_HEADERS,
        "decode",
        "oversize",
        "too big",
        "Oversize",
    )


@pytest.fixture
def small_dlq(k2_settings: Settings) -> Iterator[str]:
    """A DLQ topic made by someone else, with a 100 KiB record limit."""
    topic = f"{k2_settings.kafka.topics.dlq}-small"
    bootstrap = k2_settings.kafka.bootstrap_servers
    partitions = k2_settings.kafka.partitions
    ensure_topics(bootstrap, [topic], partitions, configs={topic: {"max.message.bytes": str(SMALL_DLQ)}})
    yield topic
    delete_topics(bootstrap, [topic], timeout=15)


def test_k2_topics_give_the_dlq_room_for_any_data_record(k2_settings: Settings) -> None:
    topics = k2_settings.kafka.topics
    limits = max_message_bytes(admin_client(k2_settings.kafka.bootstrap_servers), topics.all())
    assert [limits[t] for t in topics.data_topics()] == [BROKER_LIMIT] * 3
    assert limits[topics.dlq] == BROKER_LIMIT + DLQ_HEADROOM_BYTES


def test_a_record_at_the_broker_limit_is_dead_lettered_whole(k2_settings: Settings) -> None:
    bootstrap, topics = k2_settings.kafka.bootstrap_servers, k2_settings.kafka.topics
    # Batch header 61 + record framing 13 (value length varint 4 bytes), key b"BHP" 3 bytes more
    # than a null key, the two headers 18 bytes: the largest value trades accepts with them.
    largest = BROKER_LIMIT - 74 - 3 - 18
    value = bytes(range(256)) * (largest // 256) + b"\xff" * (largest % 256)
    source = _produce(bootstrap, topics.trades, b"BHP", value)
    assert isinstance(source, Message), source
    too_large = _produce(bootstrap, topics.trades, b"BHP", value + b"!")
    assert isinstance(too_large, KafkaError) and too_large.code() == KafkaError.MSG_SIZE_TOO_LARGE

    dlq = DeadLetterQueue(bootstrap, topics.dlq, "w1")
    assert dlq.max_record_bytes == BROKER_LIMIT + DLQ_HEADROOM_BYTES
    dlq.send(_letter(value, source.partition(), source.offset()))
    dlq.flush()

    [m] = _read(bootstrap, topics.dlq, k2_settings.kafka.partitions, 1)
    assert m.key() == b"BHP" and m.value() == value
    headers = m.headers() or []
    assert headers[-2:] == SOURCE_HEADERS  # the null header value comes back null
    h = dict(headers)
    assert h["k2.source.offset"] == str(source.offset()).encode()
    assert h["k2.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert "k2.value.truncated" not in h and dlq.truncated == 0


def test_a_letter_larger_than_a_small_dlq_lands_cut_and_flush_succeeds(
    k2_settings: Settings, small_dlq: str
) -> None:
    bootstrap = k2_settings.kafka.bootstrap_servers
    value = bytes(range(256)) * (MiB // 256)
    dlq = DeadLetterQueue(bootstrap, small_dlq, "w1")
    assert dlq.max_record_bytes == SMALL_DLQ
    dlq.send(_letter(value, offset=1))
    dlq.send(_letter(b"small", offset=2))
    dlq.flush()

    cut, small = _read(bootstrap, small_dlq, k2_settings.kafka.partitions, 2)
    h = dict(cut.headers() or [])
    kept = len(cut.value() or b"")
    assert 0 < kept < SMALL_DLQ and value.startswith(cut.value() or b"")
    assert h["k2.value.truncated"] == f"original={MiB} kept={kept}".encode()
    assert h["k2.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert (cut.headers() or [])[-2:] == SOURCE_HEADERS
    assert small.value() == b"small" and "k2.value.truncated" not in dict(small.headers() or [])
    assert (dlq.truncated, dlq.refused) == (1, 0)


def test_a_letter_the_broker_refuses_as_too_large_is_cut_and_sent_again(
    k2_settings: Settings, small_dlq: str
) -> None:
    bootstrap = k2_settings.kafka.bootstrap_servers
    value = b"x" * (900 * 1024)
    # As if the topic's limit could not be read: the producer believes 1 MiB, the broker says no.
    dlq = DeadLetterQueue(bootstrap, small_dlq, "w1", max_record_bytes=MiB)
    dlq.send(_letter(value, offset=1))
    dlq.flush()
    dlq.send(_letter(b"after", offset=2))  # the idempotent producer carries on
    dlq.flush()

    cut, after = _read(bootstrap, small_dlq, k2_settings.kafka.partitions, 2)
    assert dlq.refused == 1 and dlq.max_record_bytes == SMALL_DLQ  # read again after the refusal
    assert len(cut.value() or b"") < SMALL_DLQ
    assert dict(cut.headers() or [])["k2.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert after.value() == b"after"


def test_an_existing_smaller_dlq_is_kept_with_a_warning(k2_settings: Settings, small_dlq: str) -> None:
    topics = k2_settings.kafka.topics
    reuse = TopicNames(trades=topics.trades, quotes=topics.quotes, reference=topics.reference, dlq=small_dlq)
    with structlog.testing.capture_logs() as logs:
        limits = ensure_k2_topics(k2_settings.kafka.bootstrap_servers, reuse, k2_settings.kafka.partitions)
    assert limits[small_dlq] == SMALL_DLQ
    assert any(e["event"] == "dlq_smaller_than_sources" and e["log_level"] == "warning" for e in logs)
