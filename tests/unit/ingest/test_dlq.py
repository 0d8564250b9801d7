"""Dead letters: their size on the wire, how they are cut to fit the DLQ topic, and the queue
that sends them (against a fake producer; tests/integration/test_dlq_limits.py uses the broker).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from confluent_kafka import KafkaError
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.errors import BrokerError, DeadLetterTooLarge, K2Error
from k2.ingest.dlq import FALLBACK_MAX_RECORD_BYTES, DeadLetterQueue
from k2.ingest.dlq_record import (
    HEADERS_DROPPED,
    KEY_TRUNCATED,
    VALUE_SHA256,
    VALUE_TRUNCATED,
    DeadLetter,
    DlqRecord,
    Headers,
    build_record,
    record_bytes,
)

MiB = 1 << 20


def letter(
    value: bytes | None = b'{"symbol":"BHP"}',
    key: bytes | None = b"BHP",
    headers: Headers | None = None,
    detail: str = "price -1.0",
    offset: int = 7,
) -> DeadLetter:
    return DeadLetter("trades", 3, offset, key, value, headers, "validate", "price_not_positive", detail, "X")


# -- a reference encoder of Kafka's record batch v2, to hold record_bytes against -----------------


def _varint(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    return bytes([*out, z])


def _field(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def kafka_batch_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes of a batch holding just this record, as the broker counts them (first record: deltas 0)."""
    body = b"\x00" + _varint(0) + _varint(0) + _field(key) + _field(value) + _varint(len(headers))
    body += b"".join(_field(name.encode()) + _field(v) for name, v in headers)
    return 61 + len(_varint(len(body))) + len(body)


def _uvarint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def librdkafka_check_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What librdkafka compares with the producer's message.max.bytes (rd_kafka_msg_new0)."""
    hdrs = sum(
        _uvarint_len(len(n.encode())) + len(n.encode()) + _uvarint_len(len(v or b"")) + len(v or b"")
        for n, v in headers
    )
    return 36 + len(key or b"") + len(value or b"") + hdrs


def blobs(max_size: int) -> st.SearchStrategy[bytes | None]:
    """None, short random bytes, or a patterned blob of any length up to ``max_size``."""
    pattern = bytes(range(251)) * (max_size // 251 + 1)
    return st.one_of(st.none(), st.binary(max_size=64), st.integers(0, max_size).map(lambda n: pattern[:n]))


keys = blobs(3000)
values = blobs(60_000)
header_lists = st.lists(st.tuples(st.text(max_size=40), blobs(3000)), max_size=8)


# -- record_bytes ---------------------------------------------------------------------------------


def test_record_bytes_of_the_largest_value_a_16_mib_topic_accepts() -> None:
    # Measured against Kafka 4.1.1 (message.max.bytes 16 MiB): 16,777,142 bytes is accepted, one more is not.
    assert kafka_batch_bytes(None, b"x" * 16_777_142, []) == 16 * MiB
    assert record_bytes(None, b"x" * 16_777_142, []) == 16 * MiB + 14


@given(keys, values, header_lists)
def test_record_bytes_never_undercounts_the_broker_or_librdkafka(
    key: bytes | None, value: bytes | None, headers: Headers
) -> None:
    size = record_bytes(key, value, headers)
    assert kafka_batch_bytes(key, value, headers) <= size <= kafka_batch_bytes(key, value, headers) + 17
    assert librdkafka_check_bytes(key, value, headers) < size


# -- build_record ---------------------------------------------------------------------------------


def test_a_letter_that_fits_is_sent_whole_with_null_header_values_kept() -> None:
    original: Headers = [("trace", None), ("empty", b""), ("src", b"feed-1")]
    rec = build_record(letter(headers=original), "w1", MiB)
    assert rec.key == b"BHP" and rec.value == b'{"symbol":"BHP"}'
    assert rec.headers[-3:] == original
    assert dict(rec.headers[:-3]) == {
        "k2.source.topic": b"trades",
        "k2.source.partition": b"3",
        "k2.source.offset": b"7",
        "k2.stage": b"validate",
        "k2.reason": b"price_not_positive",
        "k2.detail": b"price -1.0",
        "k2.exception": b"X",
        "k2.writer": b"w1",
        VALUE_SHA256: hashlib.sha256(b'{"symbol":"BHP"}').hexdigest().encode(),
    }
    assert not rec.cut


def test_a_null_or_empty_value_is_hashed_as_empty() -> None:
    empty = hashlib.sha256(b"").hexdigest().encode()
    assert build_record(letter(value=None), "w", MiB).header(VALUE_SHA256) == empty
    assert build_record(letter(value=b""), "w", MiB).header(VALUE_SHA256) == empty


def test_an_oversize_value_keeps_the_longest_prefix_that_fits_and_says_so() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    rec = build_record(letter(value=value, headers=[("h", None)]), "w", 100 * 1024)
    assert rec.value is not None and value.startswith(rec.value)
    assert rec.size <= 100 * 1024 < record_bytes(rec.key, value[: len(rec.value) + 5], rec.headers)
    assert rec.header(VALUE_TRUNCATED) == f"original={len(value)} kept={len(rec.value)}".encode()
    assert rec.header(VALUE_SHA256) == hashlib.sha256(value).hexdigest().encode()
    assert rec.headers[-1] == ("h", None)  # original headers kept: they are small
    assert rec.cut


def test_original_headers_that_alone_do_not_fit_are_dropped_and_the_value_kept() -> None:
    big = [("a", b"x" * 3000), ("b", None), ("c", b"y" * 3000)]
    rec = build_record(letter(value=b"v" * 1000, headers=big), "w", 4000)
    assert rec.value == b"v" * 1000
    assert rec.header(HEADERS_DROPPED) == b"count=3 bytes=6011"
    assert not {"a", "b", "c"} & {name for name, _ in rec.headers}


def test_a_key_larger_than_the_dlq_limit_is_cut_last() -> None:
    rec = build_record(letter(key=b"k" * 10_000, value=b"v" * 100), "w", 3000)
    assert rec.size <= 3000
    assert rec.value == b"" and rec.header(VALUE_TRUNCATED) == b"original=100 kept=0"
    assert rec.key is not None and rec.header(KEY_TRUNCATED) == f"original=10000 kept={len(rec.key)}".encode()


def test_a_dlq_too_small_for_k2s_own_headers_is_an_error_with_the_facts() -> None:
    with pytest.raises(DeadLetterTooLarge) as caught:
        build_record(letter(detail="d" * 5000), "w", 600)
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == ("trades", 3, 7)
    assert caught.value.limit == 600 and caught.value.needed > 600


def test_detail_is_capped_at_1000_bytes_of_valid_utf8() -> None:
    detail = build_record(letter(detail="é" * 800), "w", MiB).header("k2.detail")
    assert detail is not None and len(detail) == 1000 and detail.decode() == "é" * 500


@settings(max_examples=500)
@given(keys, values, header_lists, st.text(max_size=1500), st.floats(min_value=0.0, max_value=1.1))
def test_any_letter_is_cut_to_fit_and_loses_only_what_it_must(
    key: bytes | None, value: bytes | None, headers: Headers, detail: str, share: float
) -> None:
    dead = letter(value=value, key=key, headers=headers, detail=detail)
    whole = build_record(dead, "w", 1 << 30).size
    k2_only = build_record(letter(value=None, key=None, detail=detail), "w", 1 << 30).size
    limit = k2_only + 100 + int((whole - k2_only) * share)  # mostly less than the letter needs
    try:
        rec = build_record(dead, "w", limit)
    except DeadLetterTooLarge:
        assert limit < k2_only + 128  # only when the k2 headers and cut notes (at most 125) leave no room
        return
    assert rec.size <= limit
    assert rec.header(VALUE_SHA256) == hashlib.sha256(value or b"").hexdigest().encode()
    assert rec.value == value or (value is not None and rec.value is not None and value.startswith(rec.value))
    assert rec.key == key or (key is not None and rec.key is not None and key.startswith(rec.key))
    assert (rec.value != value) == (rec.header(VALUE_TRUNCATED) is not None)
    assert (rec.key != key) == (rec.header(KEY_TRUNCATED) is not None)
    if headers and rec.header(HEADERS_DROPPED) is None:
        assert rec.headers[-len(headers) :] == headers  # kept, null values and all
    if rec.header(HEADERS_DROPPED) is not None:  # only if with them not even an empty value fits
        k2, n = rec.headers[:9], len(value or b"")
        note = [(VALUE_TRUNCATED, f"original={n} kept={n}".encode())] if value else []
        assert record_bytes(key, value, [*k2, *note, *headers]) - n > limit


# -- DeadLetterQueue against a fake producer --------------------------------------------------------


class FakeProducer:
    """Delivers on poll/flush; refuses records over ``broker_limit`` as the broker would."""

    def __init__(self, broker_limit: int, fail_with: int | None = None) -> None:
        self.broker_limit = broker_limit
        self.fail_with = fail_with
        self.pending: list[tuple[DlqRecord, Any]] = []
        self.delivered: list[DlqRecord] = []
        self.refused: list[DlqRecord] = []

    def produce(self, topic: str, **kw: Any) -> None:
        self.pending.append((DlqRecord(kw["key"], kw["value"], kw["headers"]), kw["on_delivery"]))

    def poll(self, timeout: float) -> int:
        pending, self.pending = self.pending, []
        for rec, on_delivery in pending:
            if rec.size > self.broker_limit:
                self.refused.append(rec)
                on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            elif self.fail_with is not None:
                on_delivery(KafkaError(self.fail_with), None)
            else:
                self.delivered.append(rec)
                on_delivery(None, None)
        return len(pending)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0


def queue(
    producer: FakeProducer, assumed: int, learned: int | None, monkeypatch: pytest.MonkeyPatch
) -> DeadLetterQueue:
    dlq = DeadLetterQueue("unused:9092", "dlq", "w1", max_record_bytes=assumed, producer=producer)
    monkeypatch.setattr(dlq, "_read_limit", lambda: learned)
    return dlq


def test_queue_cuts_a_letter_to_the_topic_limit_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(broker_limit=100 * 1024)
    dlq = queue(producer, 100 * 1024, 100 * 1024, monkeypatch)
    dlq.send(letter(value=b"x" * MiB, headers=[("trace", None)]))
    dlq.flush()
    [rec] = producer.delivered
    assert rec.size <= 100 * 1024 and rec.header(VALUE_TRUNCATED) is not None
    assert rec.headers[-1] == ("trace", None)
    assert (dlq.sent, dlq.truncated, dlq.refused) == (1, 1, 0)


def test_a_refused_letter_is_resent_cut_to_the_limit_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(broker_limit=100 * 1024)
    dlq = queue(producer, MiB, 100 * 1024, monkeypatch)  # believed 1 MiB; the topic says 100 KiB
    dlq.send(letter(value=b"x" * 900_000, offset=1))
    dlq.send(letter(value=b"small", offset=2))
    dlq.flush()
    cut, small = sorted(producer.delivered, key=lambda r: r.header("k2.source.offset") or b"")
    assert cut.size <= 100 * 1024
    assert (cut.header(VALUE_TRUNCATED) or b"").startswith(b"original=900000 kept=")
    assert small.value == b"small" and len(producer.refused) == 1
    assert dlq.max_record_bytes == 100 * 1024 and dlq.refused == 1


def test_without_a_readable_limit_a_refused_letter_is_halved_until_it_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer(broker_limit=50_000)
    dlq = queue(producer, MiB, None, monkeypatch)
    dlq.send(letter(value=b"x" * 900_000))
    dlq.flush()
    [rec] = producer.delivered
    assert 25_000 < rec.size <= 50_000 and len(producer.refused) == 5  # 900k, 450k, 225k, 112k, 56k
    assert rec.header(VALUE_SHA256) == hashlib.sha256(b"x" * 900_000).hexdigest().encode()


def test_flush_fails_when_even_k2s_headers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(broker_limit=100)
    dlq = queue(producer, MiB, None, monkeypatch)
    dlq.send(letter(value=b"x" * 10_000))
    with pytest.raises(K2Error, match="DLQ delivery failed"):
        dlq.flush()


def test_flush_fails_on_any_other_delivery_error(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(broker_limit=MiB, fail_with=KafkaError._MSG_TIMED_OUT)
    dlq = queue(producer, MiB, MiB, monkeypatch)
    dlq.send(letter())
    with pytest.raises(K2Error, match="_MSG_TIMED_OUT"):
        dlq.flush()


def test_an_unreadable_topic_limit_falls_back_to_a_conservative_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*_: object, **__: object) -> dict[str, int]:
        raise BrokerError("could not read max.message.bytes of topic dlq: TOPIC_AUTHORIZATION_FAILED")

    monkeypatch.setattr("k2.ingest.dlq.max_message_bytes", denied)
    dlq = DeadLetterQueue("unused:9092", "dlq", "w1", producer=FakeProducer(broker_limit=MiB))
    assert dlq.max_record_bytes == FALLBACK_MAX_RECORD_BYTES == 1_000_000  # under Kafka's default
