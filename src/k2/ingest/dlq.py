"""The dead-letter queue: every message k2 refuses, with its original bytes and why.

A DLQ record is the original key, value and headers, plus ``k2.*`` headers: source topic,
partition and offset, the stage that refused it (decode, validate, sequence), the rule, a
human-readable detail and the exception class. The DLQ producer is flushed before the Iceberg
commit that moves past those offsets, so a refused message is never lost; after a crash it may be
refused (and dead-lettered) again: consumers of the DLQ dedupe on (source topic, partition, offset).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Producer

from k2.errors import K2Error

__all__ = ["DeadLetter", "DeadLetterQueue"]

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    stage: str
    rule: str
    detail: str
    exception: str


class DeadLetterQueue:
    def __init__(
        self, bootstrap: str, topic: str, writer_id: str, properties: dict[str, object] | None = None
    ):
        conf: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            **(properties or {}),
        }
        self._producer = Producer(conf)
        self._topic = topic
        self._writer_id = writer_id.encode()
        self._errors: list[str] = []
        self.sent = 0

    def send(self, letter: DeadLetter) -> None:
        headers: Headers = [
            ("k2.source.topic", letter.topic.encode()),
            ("k2.source.partition", str(letter.partition).encode()),
            ("k2.source.offset", str(letter.offset).encode()),
            ("k2.stage", letter.stage.encode()),
            ("k2.reason", letter.rule.encode()),
            ("k2.detail", letter.detail[:1000].encode()),
            ("k2.exception", letter.exception.encode()),
            ("k2.writer", self._writer_id),
        ]
        if letter.headers:
            headers += [(k, v if v is not None else b"") for k, v in letter.headers]
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value=letter.value,
                    key=letter.key,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self.sent += 1
        self._producer.poll(0)

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every dead letter is acknowledged; raise if any could not be delivered."""
        remaining = self._producer.flush(timeout)
        if remaining or self._errors:
            raise K2Error(f"DLQ delivery failed: {remaining} undelivered, errors {self._errors[:3]}")
