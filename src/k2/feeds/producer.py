"""The one Kafka producer every feed uses: idempotent, acks=all, batched for throughput.

Invariant: a message handed to :meth:`FeedProducer.send` is either delivered or counted as failed,
and :meth:`FeedProducer.flush` / :meth:`FeedProducer.close` raise :class:`~k2.errors.FeedError`
if any failed or are still undelivered. Nothing is lost silently.

Delivery reports are requested for failures only (``delivery.report.only.error``), so the hot
path pays no Python callback per message: delivered = sent - failed once ``flush`` drained the
queue to zero.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from k2.config import KafkaSettings
from k2.errors import FeedError

__all__ = ["DEFAULT_PRODUCER_CONFIG", "FeedProducer", "send_paced"]

Headers = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None

DEFAULT_PRODUCER_CONFIG: dict[str, str | int | bool] = {
    "enable.idempotence": True,
    "acks": "all",
    # Throughput: let librdkafka fill large batches; 10-20 ms of linger costs nothing in a feed.
    "linger.ms": 15,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    # JSON market messages compress ~4x; lz4 is cheap and runs on librdkafka's threads, not ours.
    "compression.type": "lz4",
    "delivery.report.only.error": True,
}

_POLL_EVERY = 10_000  # serve (error) callbacks this often on the hot path
_MAX_ERRORS_KEPT = 20


class FeedProducer:
    """``confluent_kafka.Producer`` with exact delivery accounting.

    ``kafka.client_properties`` override the defaults; ``overrides`` override both. Idempotence
    and ``acks=all`` cannot be turned off: a feed that may duplicate or lose on retry would make
    every exactly-once check downstream meaningless.
    """

    def __init__(self, kafka: KafkaSettings, overrides: dict[str, str | int | bool] | None = None) -> None:
        conf: dict[str, Any] = {**DEFAULT_PRODUCER_CONFIG, **kafka.client_properties, **(overrides or {})}
        conf["bootstrap.servers"] = kafka.bootstrap_servers
        conf["enable.idempotence"] = True
        conf["acks"] = "all"
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_error
        self.config = {k: v for k, v in conf.items() if not callable(v)}
        self.sent = 0
        self.failed = 0
        self.failures_by_error: Counter[str] = Counter()
        self.errors: list[str] = []
        self._fatal: KafkaError | None = None
        self._closed = False
        try:
            self._producer = Producer(conf)
        except KafkaException as exc:
            raise FeedError(f"cannot create Kafka producer for {kafka.bootstrap_servers}: {exc}") from exc

    # -- callbacks (run inside poll/flush, on our thread) -----------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.failed += 1
        self.failures_by_error[err.name()] += 1
        partition = msg.partition()
        where = (
            f"{msg.topic()}[{partition}]" if partition is not None and partition >= 0 else f"{msg.topic()}"
        )
        line = f"{where}: {err.str()}"
        if len(self.errors) < _MAX_ERRORS_KEPT and line not in self.errors:
            self.errors.append(line)

    def _on_error(self, err: KafkaError) -> None:
        # Transient errors (broker down, all brokers down) are retried by librdkafka within
        # message.timeout.ms and surface as delivery failures if they persist; only fatal
        # errors (idempotence broken, fenced) stop the feed here.
        if err.fatal() and self._fatal is None:
            self._fatal = err

    # -- producing --------------------------------------------------------------------------

    def send(self, topic: str, key: bytes, value: bytes, headers: Headers = None) -> None:
        """Queue one message; blocks (serving delivery reports) while the local queue is full."""
        if self._fatal is not None:
            raise FeedError(f"Kafka producer failed fatally: {self._fatal.str()}")
        produce = self._producer.produce
        while True:
            try:
                if headers is None:
                    produce(topic, value, key)
                else:
                    produce(topic, value, key, headers=headers)
                break
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise FeedError(f"cannot produce to {topic}: {exc}") from exc
        self.sent += 1
        if self.sent % _POLL_EVERY == 0:
            self._producer.poll(0)

    def send_many(self, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
        """Queue ``(topic, key, value)`` messages as fast as librdkafka takes them; returns how many."""
        producer = self._producer
        produce = producer.produce
        poll = producer.poll
        n = 0
        try:
            for topic, key, value in messages:
                try:
                    produce(topic, value, key)
                except BufferError:
                    while True:
                        poll(0.05)
                        try:
                            produce(topic, value, key)
                            break
                        except BufferError:
                            continue
                n += 1
                if n % _POLL_EVERY == 0:
                    poll(0)
                    if self._fatal is not None:
                        raise FeedError(f"Kafka producer failed fatally: {self._fatal.str()}")
        except KafkaException as exc:
            raise FeedError(f"cannot produce: {exc}") from exc
        finally:
            self.sent += n
        return n

    def connect(self, topics: Iterable[str], timeout: float = 30.0) -> None:
        """Connect and learn the partitions of ``topics`` before the first send.

        Without it, the first message waits for librdkafka to connect and fetch metadata (about
        0.5 s here), which a feed would count as its own sending time. A broker that cannot be
        reached fails here, with the address, instead of after ``message.timeout.ms``.
        """
        try:
            for topic in sorted(set(topics)):
                self._producer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise FeedError(f"cannot reach Kafka at {self.config['bootstrap.servers']}: {exc}") from exc

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    # -- completion -------------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Messages acknowledged by the broker (exact once :meth:`flush` returned)."""
        return self.sent - self.failed - len(self._producer)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is acknowledged; raise ``FeedError`` if any was not."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        self._raise_if_failed(remaining)

    def close(self, timeout: float = 60.0) -> None:
        """Flush and release; idempotent. Raises ``FeedError`` if anything was not delivered."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)

    def _raise_if_failed(self, remaining: int) -> None:
        if self._fatal is not None:
            raise FeedError(f"Kafka producer failed fatally: {self._fatal.str()}")
        if self.failed or remaining:
            detail = "; ".join(self.errors[:5])
            raise FeedError(
                f"{self.failed} of {self.sent} messages failed delivery and {remaining} are still queued"
                f" ({dict(self.failures_by_error)}){': ' + detail if detail else ''}"
            )

    def __enter__(self) -> FeedProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Already failing: deliver what we can, but let the original error propagate.
            self._closed = True
            self._producer.flush(5.0)


def send_paced(
    producer: FeedProducer, batch: Iterable[tuple[str, bytes, bytes]], due: Iterable[float], t0: float
) -> None:
    """Send each message no earlier than ``t0 + due`` (``time.perf_counter`` seconds)."""
    clock = time.perf_counter
    now = clock() - t0
    for (topic, key, value), at in zip(batch, due, strict=True):
        if at > now:
            now = clock() - t0
            if at - now > 0.001:
                producer.poll(0)
                time.sleep(at - now)
                now = at
        producer.send(topic, key, value)
