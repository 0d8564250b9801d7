"""The fetch thread: calls ``Consumer.consume`` ahead of the thread that decodes and sequences.

``consume`` spends most of its time building one Python ``Message`` per record, under the GIL;
decoding spends most of its time in Arrow's JSON parser, outside it. Run one after the other on a
single thread, a core sits idle half the time; run as a two-stage pipeline with one batch in
between, they overlap.

Two rules make this safe:

- **Only this thread touches the consumer while it runs.** confluent-kafka's consumer is not safe
  to call from a second thread during ``consume`` (a cached ``get_watermark_offsets`` from another
  thread hung both, reproduced here), so pause/resume, advisory commits and watermark queries are
  handed over with :meth:`Fetcher.call` and run between two fetches.
- **A batch carries the partition states it was fetched under.** Rebalance callbacks run on this
  thread, inside ``consume``; if a partition was revoked (or revoked and assigned again) before a
  batch is processed, its rows are stale: whoever owns the partition now resumes from the offsets
  stored in Iceberg. ``generation`` is what ``snapshot()`` returned right after the fetch, and the
  consumer of the batch compares it by identity.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, TopicPartition

__all__ = ["FetchedBatch", "Fetcher"]

T = TypeVar("T")


@dataclass(slots=True)
class FetchedBatch:
    messages: list[Message]
    generation: dict[Any, Any]
    # High watermark per (topic, partition) of the batch, as of the fetch responses (no round trip).
    high_watermarks: dict[tuple[str, int], int] = field(default_factory=dict)


class Fetcher:
    def __init__(
        self,
        consumer: Consumer,
        batch: int,
        timeout_s: float,
        snapshot: Callable[[], dict[Any, Any]],
        depth: int = 1,
    ) -> None:
        self._consumer = consumer
        self._batch = batch
        self._timeout = timeout_s
        self._snapshot = snapshot
        self._queue: queue.Queue[FetchedBatch] = queue.Queue(maxsize=depth)
        self._ops: queue.SimpleQueue[tuple[Callable[[Consumer], Any], Future[Any]]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._running = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="k2-fetch", daemon=True)

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def get(self, timeout: float) -> FetchedBatch | None:
        """The next batch, or None if none came within ``timeout``. Raises what the thread raised."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self.error is not None:
                raise self.error from None
            return None

    def call(self, op: Callable[[Consumer], T], wait: float | None = None) -> T | None:
        """Run ``op(consumer)`` on the fetch thread, between two fetches (at once if not running).

        ``wait``: seconds to wait for the result (None: do not wait, return None).
        """
        if self.error is not None:
            raise self.error
        if not self._running:
            return op(self._consumer)
        done: Future[T] = Future()
        self._ops.put((op, done))
        if wait is None:
            return None
        return done.result(timeout=wait)

    def stop(self) -> None:
        """Stop fetching and wait for the thread; afterwards :meth:`call` runs on the caller.

        A batch still queued is discarded: its offsets were never taken into the buffer, so
        nothing is lost (it is read again from the stored offsets after a restart).
        """
        self._stopping.set()
        if self._thread.is_alive():  # it notices within one consume timeout or put attempt
            self._thread.join()
        self._running = False
        self._serve_ops()  # anything handed over while it was stopping
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _serve_ops(self) -> None:
        while True:
            try:
                op, done = self._ops.get_nowait()
            except queue.Empty:
                return
            try:
                done.set_result(op(self._consumer))
            except Exception as e:  # the caller decides what a failed op means
                done.set_exception(e)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._serve_ops()
                msgs = self._consumer.consume(self._batch, self._timeout)
                if not msgs:
                    continue
                generation = self._snapshot()
                item = FetchedBatch(msgs, generation, self._high_watermarks(generation))
                del msgs
                while not self._stopping.is_set():
                    try:
                        self._queue.put(item, timeout=0.02)
                        break
                    except queue.Full:
                        self._serve_ops()  # the processing thread may be waiting on one
        except BaseException as e:  # surfaced by get(); ingest stops
            self.error = e

    def _high_watermarks(self, partitions: dict[Any, Any]) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for topic, p in partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            out[(topic, p)] = high
        return out
