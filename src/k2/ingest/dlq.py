"""The dead-letter queue: every message k2 refuses, with its original bytes and why.

A DLQ record is the original key, value and headers, plus ``k2.*`` headers: source topic,
partition and offset, the stage that refused it (decode, validate, sequence), the rule, a
human-readable detail, the exception class and the sha256 of the value
(:mod:`k2.ingest.dlq_record`). The DLQ producer is flushed before the Iceberg commit that moves
past those offsets, so a refused message is never lost; after a crash it may be refused (and
dead-lettered) again: consumers of the DLQ dedupe on (source topic, partition, offset).

Size: k2 creates the DLQ topic to hold any source record whole (``ensure_k2_topics``), but a DLQ
topic made by someone else may be smaller, and one refused letter that can never be sent would
stop ingest for good. So the queue reads the topic's ``max.message.bytes`` once at start and sets
the producer's ``message.max.bytes`` to it (librdkafka refuses a larger record client-side;
``batch.size`` need not change, since the first record of a batch is always taken whatever its
size); a letter that does not fit is cut to fit. If the broker still refuses a letter as too large
(the limit could not be read, or the topic shrank), the letter is cut further and sent again.
``flush`` raises on any other delivery failure, deliberately: the Iceberg commit must not move
past a dead letter that is not in Kafka.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, Producer

from k2.broker.topics import admin_client, max_message_bytes
from k2.errors import BrokerError, DeadLetterTooLarge, K2Error
from k2.ingest.dlq_record import DeadLetter, DlqRecord, build_record
from k2.logs import get_logger

__all__ = ["FALLBACK_MAX_RECORD_BYTES", "DeadLetter", "DeadLetterQueue"]

# When the DLQ topic's limit cannot be read: librdkafka's own default, under Kafka's (1,048,588).
FALLBACK_MAX_RECORD_BYTES = 1_000_000
# librdkafka's range for ``message.max.bytes``.
_PRODUCER_MIN, _PRODUCER_MAX = 1000, 1_000_000_000
_DESCRIBE_TIMEOUT_S = 10.0

_log = get_logger("dlq")


class _Producer(Protocol):
    def produce(self, topic: str, **kwargs: Any) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class DeadLetterQueue:
    """Sends dead letters to one DLQ topic, each cut to fit it; safe to use from two threads.

    ``max_record_bytes`` skips asking the broker for the topic's limit; ``producer`` replaces the
    librdkafka producer (tests).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        writer_id: str,
        properties: Mapping[str, object] | None = None,
        *,
        max_record_bytes: int | None = None,
        producer: _Producer | None = None,
    ) -> None:
        self._topic = topic
        self._writer_id = writer_id
        self._admin_conf = (bootstrap, dict(properties or {}))
        limit = max_record_bytes or self._read_limit()
        if limit is None:
            _log.warning("dlq_limit_assumed", dlq=topic, max_record_bytes=FALLBACK_MAX_RECORD_BYTES)
        self.max_record_bytes = min(limit or FALLBACK_MAX_RECORD_BYTES, _PRODUCER_MAX)
        conf: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            **(properties or {}),
            "message.max.bytes": max(self.max_record_bytes, _PRODUCER_MIN),
        }
        self._producer: _Producer = producer or Producer(conf)
        self._lock = threading.Lock()
        self._refused: list[tuple[DeadLetter, int]] = []  # (letter, size of the refused record)
        self._errors: list[str] = []
        self.sent = 0
        self.truncated = 0
        self.refused = 0

    def send(self, letter: DeadLetter) -> None:
        """Queue ``letter`` for delivery (cut to fit the DLQ topic if need be).

        Raises:
            DeadLetterTooLarge: not even its ``k2.*`` headers fit the DLQ topic.
        """
        self._produce(letter, self.max_record_bytes)
        self.sent += 1
        self._producer.poll(0)
        self._resend_refused()

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every dead letter is acknowledged; raise if any could not be delivered.

        Letters the broker refused as too large are cut and sent again first.

        Raises:
            K2Error: a dead letter is undelivered or failed with any error but its size.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
            if remaining or not self._refused:
                break
            self._resend_refused()
        undelivered = remaining + len(self._refused)
        if undelivered or self._errors:
            raise K2Error(f"DLQ delivery failed: {undelivered} undelivered, errors {self._errors[:3]}")

    def close(self) -> None:
        """Let go of the producer (its broker connections and threads). Every letter was already
        flushed by the commit that moved offsets past it; nothing is sent after this."""
        close = getattr(self._producer, "close", None)
        if close is not None:
            close()

    def _produce(self, letter: DeadLetter, limit: int) -> None:
        record = build_record(letter, self._writer_id, limit)
        if record.cut:
            self.truncated += 1
            _log.warning(
                "dead_letter_cut_to_fit",
                dlq=self._topic,
                source=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                value_bytes=len(letter.value or b""),
                kept_bytes=len(record.value or b""),
                limit=limit,
            )
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    key=record.key,
                    value=record.value,
                    headers=record.headers,
                    on_delivery=self._on_delivery(letter, record),
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def _on_delivery(self, letter: DeadLetter, record: DlqRecord) -> Callable[[Any, Any], None]:
        # Runs inside poll()/flush() on whichever thread called them: only append here.
        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                return
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                with self._lock:
                    self._refused.append((letter, record.size))
            else:
                self._errors.append(str(err))

        return delivered

    def _resend_refused(self) -> None:
        """Cut each letter the broker refused as too large to a size it can take, and resend it.

        The limit is read again (the topic may have shrunk); without a smaller limit to go by,
        the letter is cut to half the refused size, so a few rounds reach any limit and a letter
        that cannot shrink further ends as :class:`DeadLetterTooLarge`, a delivery error.
        """
        with self._lock:
            refused, self._refused = self._refused, []
        if not refused:
            return
        learned = self._read_limit()
        if learned is not None and learned < self.max_record_bytes:
            self.max_record_bytes = learned
        for letter, size in refused:
            self.refused += 1
            limit = self.max_record_bytes if self.max_record_bytes < size else size // 2
            _log.warning(
                "dead_letter_refused_as_too_large",
                dlq=self._topic,
                source=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                refused_bytes=size,
                retry_limit=limit,
            )
            try:
                self._produce(letter, limit)
            except DeadLetterTooLarge as exc:
                self._errors.append(str(exc))

    def _read_limit(self) -> int | None:
        """The DLQ topic's ``max.message.bytes``, or None (logged) if the broker will not say."""
        bootstrap, properties = self._admin_conf
        try:
            admin = admin_client(bootstrap, properties)
            limit = max_message_bytes(admin, [self._topic], _DESCRIBE_TIMEOUT_S)[self._topic]
        except BrokerError as exc:
            _log.warning("dlq_limit_unreadable", dlq=self._topic, error=str(exc))
            return None
        return min(limit, _PRODUCER_MAX)
