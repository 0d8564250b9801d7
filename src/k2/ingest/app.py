"""The ingest process: the Kafka consume loop that wires every stage together.

Exactly-once rests on three rules kept here:
- the resume position is the offsets stored in the Iceberg snapshot (``on_assign`` seeks to them);
  Kafka's group offsets are committed only as an advisory signal for lag;
- a partition's sequencing state, buffered rows and offsets move with its assignment: they are
  rebuilt from Iceberg on assign, and committed then dropped on revoke (a clean handover; a lost
  partition is dropped without committing), so several ingest processes can share one group;
- the committer thread is the only writer, and it checks offset continuity on every commit.

Three threads: the fetch thread calls ``consume`` (and so runs the rebalance callbacks), this
module's loop decodes, sequences and buffers each batch, and the committer writes. A batch whose
partition changed hands between fetch and processing is dropped (see ``k2.ingest.fetcher``).

Consumption pauses (per partition) when the committer falls behind, so the live buffer is
bounded; Kafka keeps everything not yet committed.

Under load (``k2.ingest.load_control``) the admission step sheds messages by key before they are
parsed; their offset spans go into the deferred ledger in the same locked step that moves the
consumed offset past them, and every commit stores the ledger with the offsets. A deep backlog is
deferred whole (the consumer jumps to the head). When load allows, the backfill re-reads the
ledger's ranges and lands exactly the shed messages through the same path, and each range leaves
the ledger in the commit that lands its rows: nothing shed is ever lost, nothing lands twice.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from k2.config import Settings
from k2.degradation import memory_budget
from k2.ingest.admission import KEEP_ALL, admit, needs_keys
from k2.ingest.backfill import BackfillReader, Chunk
from k2.ingest.committer import Committer, FlushWork, StreamWork, stream_key
from k2.ingest.consumer import consumer_config
from k2.ingest.dead_letters import DeadLetterRouter
from k2.ingest.deferred_work import DeferredWork
from k2.ingest.fetcher import Fetcher
from k2.ingest.freshness import sample_freshness
from k2.ingest.live_server import LiveServer, start_live_server
from k2.ingest.live_view import live_view
from k2.ingest.load_control import LoadControl, open_shedder
from k2.ingest.metrics import IngestCollector, MetricsServer, PartitionFacts, start_metrics_server
from k2.ingest.parts import IngestParts, open_parts, stream_of_topic
from k2.ingest.process import freeze_startup_heap, peak_rss_bytes
from k2.ingest.report import IngestReport
from k2.ingest.restore import restore_partitions
from k2.ingest.sequencing import PartitionSequencing, apply_sequencing
from k2.ingest.status import IngestStatus, write_status
from k2.ingest.warmup import warm_up
from k2.lake import TABLE_FOR_STREAM, read_offsets
from k2.lake.tables import GAPS_TABLE
from k2.live_buffer import LiveBuffer
from k2.live_protocol import LiveView
from k2.logs import get_logger
from k2.observability import IngestMetrics
from k2.shedding import CLASSES
from k2.validation import ValidationRules, decode_batch

__all__ = ["IngestApp", "IngestReport"]


@dataclass(slots=True)
class _Partition:
    """Everything this process holds for one assigned topic partition."""

    sequencing: PartitionSequencing
    committed: int | None  # next offset stored in Iceberg (None: nothing stored yet)
    consumed: int | None = None  # next offset after the last message taken into the buffer
    revoking: bool = False  # being handed over: batches fetched before the revoke are not taken

    def position(self) -> int | None:
        return self.consumed if self.consumed is not None else self.committed


class IngestApp:
    """One ingest process: wires fetch, decode, sequencing, the live buffer and the committer.

    ``parts`` (tables, their writers, the DLQ) are opened by :func:`open_parts` unless given, so
    a test can hand in its own; nothing here reads the environment. ``backfill_now``: backfill
    deferred ranges whenever the loop is idle, whatever the level (``k2 backfill``).
    """

    def __init__(
        self,
        settings: Settings,
        writer_id: str | None = None,
        parts: IngestParts | None = None,
        *,
        backfill_now: bool = False,
    ) -> None:
        self._s = settings
        self.writer_id = (
            writer_id
            or settings.ingest.writer_id
            or (f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        )
        self._log = get_logger("ingest", writer=self.writer_id)
        self._stream_of = stream_of_topic(settings.kafka.topics)
        parts = parts or open_parts(settings, self.writer_id)
        self._tables = parts.tables
        self._writers = parts.writers
        ing = settings.ingest
        self._rules = ValidationRules(
            known_exchanges=frozenset(ing.known_exchanges),
            supported_schema_versions=frozenset(ing.supported_schema_versions),
            max_message_bytes=ing.max_message_bytes,
            future_tolerance_us=int(ing.future_tolerance_s * 1e6),
        )
        self._lock = threading.RLock()
        self._parts: dict[tuple[str, int], _Partition] = {}
        self.buffer = LiveBuffer()
        self.metrics = IngestMetrics()
        self._dlq = parts.dlq
        self._letters = DeadLetterRouter(
            parts.dlq, settings.kafka.bootstrap_servers, settings.kafka.client_properties
        )
        self._committer = Committer(
            self.buffer,
            self._writers,
            self._tables[GAPS_TABLE],
            parts.dlq,
            self._collect,
            self._on_committed,
            ing,
            settings.iceberg,
            self._set_aside,
            self.metrics,
        )
        self._control = LoadControl(
            settings.degradation, memory_budget(settings.degradation.memory_budget_bytes), self.writer_id
        )
        self._shedder = open_shedder(settings, self._log)
        self._deferred = DeferredWork()
        self._backfill = BackfillReader(settings.kafka.bootstrap_servers, settings.kafka.client_properties)
        self._high: dict[tuple[str, int], int] = {}  # latest high watermarks seen by the fetch thread
        self._flush_asked_at = 0.0
        self._backfill_now = backfill_now  # ``k2 backfill``: whatever the load
        self._advisory: list[TopicPartition] = []
        self._paused = False
        self._memory_paused = False
        self._stop = threading.Event()
        self._assigned_at: float | None = None
        self.report = IngestReport()
        self._consumer: Consumer | None = None
        self._fetcher: Fetcher | None = None
        self._live_server: LiveServer | None = None
        self.live_endpoint: str | None = None
        self._collector = IngestCollector(
            writer=self.writer_id,
            report=self.report,
            committer=self._committer,
            dlq=parts.dlq,
            control=self._control,
            buffer=self.buffer,
            partitions=self._partition_facts,
            paused=lambda: self._paused,
        )
        self.metrics.register(self._collector)
        self._metrics_server: MetricsServer | None = None
        self.metrics_endpoint: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, exit_when_idle: float | None = None, max_seconds: float | None = None) -> IngestReport:
        started = time.monotonic()
        warm_up(self._rules)
        freeze_startup_heap()
        self._consumer = self._make_consumer()
        ing = self._s.ingest
        self._fetcher = fetcher = Fetcher(
            self._consumer, ing.consume_batch, ing.consume_timeout_s, self._generation
        )
        fetcher.start()
        self._committer.start()
        if self._s.live.enabled:
            self._live_server, self.live_endpoint = start_live_server(
                self._s.live, self._live_view, self._live_facts
            )
        self._metrics_server = start_metrics_server(
            ing.metrics_host,
            ing.metrics_port,
            self.metrics.registry,
            on_error=lambda e: self.metrics.error("metrics_server", e),
        )
        self.metrics_endpoint = self._metrics_server.endpoint
        last_data = time.monotonic()
        last_log = last_status = last_data
        try:
            while not self._stop.is_set():
                if self._committer.error is not None:
                    raise self._committer.error
                self._apply_backpressure()
                fetched = fetcher.get(ing.consume_timeout_s)
                self._commit_advisory()
                now = time.monotonic()
                if fetched is not None:
                    msgs = fetched.messages
                    if self.report.first_consumed_at is None:
                        self.report.first_consumed_at = time.time()
                    took = time.perf_counter()
                    self._process(msgs, fetched.generation)
                    took = time.perf_counter() - took
                    self._log.debug(
                        "batch", messages=len(msgs), seconds=round(took, 4), buffered=self.buffer.rows
                    )
                    last_data = now
                    self._high.update(fetched.high_watermarks)
                    self._regulate(now, idle=len(msgs) < ing.consume_batch // 4)
                    if exit_when_idle is not None and self._caught_up(fetched.high_watermarks):
                        # A bounded run: nothing else will fill the buffer, so commit now rather
                        # than after the idle wait (a stale cached watermark only costs a commit).
                        self._committer.request_flush()
                else:
                    self._regulate(now, idle=True)
                if (
                    fetched is None
                    and exit_when_idle is not None
                    and self._idle_for(now, last_data) >= exit_when_idle
                ):
                    if self._drained() and self._caught_up():
                        self.report.exit_reason = "idle"
                        break
                    self._committer.request_flush()
                if max_seconds is not None and now - started >= max_seconds:
                    self.report.exit_reason = "max_seconds"
                    break
                if now - last_status >= 1:
                    last_status = now
                    self._write_status()
                if now - last_log >= 5:
                    last_log = now
                    self._log_progress()
            else:
                self.report.exit_reason = self.report.exit_reason or "stopped"
            fetcher.stop()
            self._committer.stop()
            if self._committer.error is not None:
                raise self._committer.error
            self._committer.flush_now()
            self._commit_advisory()
        finally:
            if self._live_server is not None:
                self._live_server.stop()
            if self._metrics_server is not None:
                self._metrics_server.stop()
            fetcher.stop()
            self._committer.stop()
            self._consumer.close()
            self._backfill.close()
            self._dlq.close()
            # A clean stop leaves no status behind; a crashed process's file stays, and ages.
            (self._s.ingest.status_dir / f"{self.writer_id}.json").unlink(missing_ok=True)
            self.report.seconds = time.monotonic() - started
            self.report.commits = self._committer.commits
            self.report.landed = dict(self._committer.rows_committed)
            self.report.last_committed_at = self._committer.last_rows_committed_at
            self.report.peak_rss_bytes = peak_rss_bytes()
        summary = {k: v for k, v in self.report.as_dict().items() if k not in ("freshness", "level_timeline")}
        self._log.info("ingest_stopped", **summary)
        return self.report

    # -- the live endpoint (k2.ingest.live_server) ---------------------------------------------

    def _live_view(self, table: str) -> LiveView | None:
        stream = next((s for s, t in TABLE_FOR_STREAM.items() if t == table), None)
        if stream is None:
            return None
        with self._lock:
            positions = {
                p: (part.committed, part.consumed)
                for (topic, p), part in self._parts.items()
                if self._stream_of[topic] == stream
            }
            return live_view(table, stream, positions, self.buffer, self._live_facts())

    def _live_facts(self) -> dict[str, Any]:
        level = self._control.level
        return {"writer": self.writer_id, "pid": os.getpid(), "level": int(level), "level_name": level.name}

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    # -- consuming ---------------------------------------------------------------------------

    def _make_consumer(self) -> Consumer:
        # Exactly-once needs manual offsets: Kafka's group offsets are advisory (see module doc).
        conf = consumer_config(
            self._s.kafka,
            self._s.kafka.group_id,
            **{"enable.auto.commit": False, "enable.auto.offset.store": False},
        )
        conf.setdefault("auto.offset.reset", "earliest")
        conf.setdefault("session.timeout.ms", 15000)
        # librdkafka's prefetch queue is memory no pause can take back: keep it to a tenth of
        # the memory budget (256 MiB on a machine of 2.5 GB or more).
        queue_kb = int(conf.get("queued.max.messages.kbytes", 256 << 10))
        conf["queued.max.messages.kbytes"] = max(
            1024, min(queue_kb, self._control.budget_bytes // 10 // 1024)
        )
        consumer = Consumer(conf)
        consumer.subscribe(
            list(self._stream_of), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        return consumer

    def _generation(self) -> dict[tuple[str, int], _Partition]:
        """The partition states current right now; a fetched batch carries them (see module doc)."""
        with self._lock:
            return dict(self._parts)

    def _process(self, msgs: list[Message], generation: dict[tuple[str, int], _Partition]) -> None:
        # map() over the C methods: these per-message calls are most of the Python work per batch.
        if any(map(Message.error, msgs)):
            for m in msgs:
                err = m.error()
                if err is not None and (err.fatal() or err.code() != KafkaError._PARTITION_EOF):
                    self._log.warning("consume_error", error=str(err))
                    self.metrics.error("consume", err.name())
            msgs = [m for m in msgs if m.error() is None]
        by_topic: dict[str, list[Message]] = defaultdict(list)
        topics = list(map(Message.topic, msgs))
        if topics and topics.count(topics[0]) == len(topics):
            by_topic[topics[0]] = msgs
        else:
            for t, m in zip(topics, msgs, strict=True):
                by_topic[t].append(m)
        for topic, batch in by_topic.items():
            self.metrics.consumed.labels(self._table_of(topic)).inc(len(batch))
            self._process_topic(topic, batch, generation)
        self.report.consumed += len(msgs)

    def _process_topic(
        self,
        topic: str,
        msgs: list[Message],
        generation: dict[tuple[str, int], _Partition],
        backfill: Chunk | None = None,
    ) -> None:
        """Admit, decode, sequence and buffer one topic's messages of a batch.

        ``backfill``: the messages are a chunk re-read from a deferred range (only those of its
        shed classes): they land like live ones, the consumed offsets stay where they are, and
        the chunk leaves the ledger in the same locked step that buffers its rows.
        """
        stream = self._stream_of[topic]
        n = len(msgs)
        partitions = np.fromiter(map(Message.partition, msgs), np.int32, n)
        offsets = np.fromiter(map(Message.offset, msgs), np.int64, n)
        last_offset = _last_offsets(partitions, offsets) if backfill is None else {}
        admission = KEEP_ALL
        if backfill is None:
            level = self._control.level
            if needs_keys(self._shedder, level):
                keys = list(map(Message.key, msgs))
                admission = admit(self._shedder, level, stream, keys, partitions, offsets)
            if admission.keep is not None:
                keep = np.flatnonzero(admission.keep)
                msgs = [msgs[i] for i in keep.tolist()]
                partitions, offsets = partitions[keep], offsets[keep]
                self.report.shed += n - len(msgs)
                _add_counts(self.report.shed_by_class, admission.shed_by_class)
        values = list(map(Message.value, msgs))
        if None in values:  # a tombstone: judged as an empty message
            values = [v or b"" for v in values]
        now_us = time.time_ns() // 1000
        decoded = decode_batch(stream, values, partitions, offsets, self._rules, now_us)
        if decoded.rejects:
            self._count_rejected(topic, self._letters.refused(topic, msgs, decoded.rejects))
            self.metrics.dead_lettered(self._table_of(topic), ((r.stage, r.rule) for r in decoded.rejects))
        # The batch's partitions (shedding only removes messages, never a partition's span).
        owned_now = set(last_offset) if backfill is None else {backfill.partition}
        with self._lock:
            # Still ours, and the same assignment as when fetched: otherwise whoever owns the
            # partition now resumes from the offsets stored in Iceberg and reads these again.
            states = {
                p: part.sequencing
                for p in owned_now
                if (part := self._parts.get((topic, p))) is not None
                and part is generation.get((topic, p))
                and not part.revoking
            }
            rows = decoded.rows
            if len(states) < len(owned_now):
                last_offset = {p: o for p, o in last_offset.items() if p in states}
                rows = rows.filter(pc.is_in(rows["kafka_partition"], pa.array(list(states), pa.int32())))
            outcome = apply_sequencing(rows, states, now_us)
            self.buffer.append(TABLE_FOR_STREAM[stream], outcome.rows, time.monotonic())
            for p, off in last_offset.items():
                part = self._parts[(topic, p)]
                part.consumed = max(off + 1, part.consumed or 0)
            for span in admission.deferred:
                if span.partition in states:
                    self._deferred.defer(
                        topic,
                        span.partition,
                        span.first,
                        span.last,
                        admission.classes,
                        span.count,
                        time.time(),
                    )
            if backfill is not None and backfill.partition in states:
                self._deferred.backfilled(topic, backfill.partition, backfill.first, backfill.read_to, n)
                self.report.backfilled += outcome.rows.num_rows
        if backfill is None and msgs:
            fresh: list[tuple[float, str, float]] = []  # this batch's samples (<= 32 or so)
            sample_freshness(fresh, msgs, lambda key: self._class_of(stream, key), time.time(), len(msgs))
            self.metrics.observe_freshness(fresh)
            _keep_newest(self.report.freshness, fresh, self._s.ingest.freshness_samples)
        self.report.duplicates += outcome.duplicates
        if outcome.unplaceable.num_rows:
            n = self._letters.unplaceable(topic, msgs, outcome.unplaceable)
            self.report.unplaceable += n
            self.metrics.dead_letters.labels(self._table_of(topic), "sequence", "unplaceable").inc(n)

    def _set_aside(self, topic: str, rows: pa.Table, error: BaseException) -> None:
        n = self._letters.unwritable(topic, rows, error)
        self._count_rejected(topic, n)
        self.metrics.dead_letters.labels(self._table_of(topic), "commit", "unwritable").inc(n)

    def _table_of(self, topic: str) -> str:
        return TABLE_FOR_STREAM[self._stream_of[topic]]

    def _count_rejected(self, topic: str, n: int) -> None:
        with self._lock:  # the committer thread sets rows aside too
            self.report.rejected[topic] = self.report.rejected.get(topic, 0) + n

    def _apply_backpressure(self) -> None:
        """Pause every owned partition while the buffer is full or memory is past the hard bound.

        Kafka keeps what is not consumed, so pausing never loses anything; it bounds the buffer
        (rows waiting for the committer) and keeps the process from running out of memory.
        """
        assert self._fetcher is not None
        limit = self._s.ingest.max_buffered_rows
        rows = self.buffer.rows
        full = rows >= limit if not self._paused else rows >= limit // 2
        # Pausing for memory only helps while the buffer holds rows a commit will give back;
        # with nothing buffered the memory is not ingest's to free, and a pause would never end.
        self._memory_paused = self._control.must_pause(self._memory_paused) and rows > 0
        want = full or self._memory_paused
        if want and not self._paused:
            self._fetcher.call(lambda c: c.pause(c.assignment()))
            self._paused = True
            self.report.memory_pauses += self._memory_paused
            self._committer.request_flush()
            self._log.info("paused", buffered_rows=rows, memory=round(self._control.memory, 3))
        elif self._paused and not want:
            self._fetcher.call(lambda c: c.resume(c.assignment()))
            self._paused = False
            self._log.info("resumed", buffered_rows=rows, memory=round(self._control.memory, 3))

    # -- load: degradation, shedding, backfill -------------------------------------------------

    def _lag(self) -> int:
        """Messages between the owned partitions' high watermarks and their positions."""
        with self._lock:
            positions = [(k, part.position()) for k, part in self._parts.items()]
        return sum(max(0, self._high.get(k, 0) - (pos or 0)) for k, pos in positions if k in self._high)

    def _regulate(self, now: float, idle: bool) -> None:
        """Feed the degradation level and act on it; then backfill if the load allows."""
        lag = self._lag()
        if self._control.observe(lag, self.buffer.nbytes, now) is not None:
            level = int(self._control.level)
            self.report.level_changes += 1
            self.report.max_level = max(self.report.max_level, level)
            self.report.level_timeline.append((time.time(), level))
            del self.report.level_timeline[:-256]
        self._committer.scale = self._control.commit_scale()
        if self._control.memory_pressure() and now - self._flush_asked_at > 1.0:
            self._flush_asked_at = now
            if self.buffer.rows:  # commit what is buffered before anything is shed
                self._committer.request_flush()
            else:  # and hand what Arrow's allocator holds back to the system
                pa.default_memory_pool().release_unused()
        if self._control.defers_backlog(lag) and self._fetcher is not None:
            self._fetcher.call(self._defer_backlog)
        elif (
            idle
            and self._deferred.has_pending(self._parts)
            and (self._backfill_now or self._control.may_backfill(lag))
        ):
            self._backfill_step()

    def _defer_backlog(self, consumer: Consumer) -> None:
        """Jump every owned partition to its high watermark, deferring the records skipped.

        Runs on the fetch thread between two fetches, under the ingest lock: each partition gets
        a new state object, so a batch fetched before the jump (it carries the old one) is
        dropped whole by the generation check, and the skipped span enters the ledger in the
        same step that moves the consumed offset past it.
        """
        jumps: list[TopicPartition] = []
        deferred = 0
        with self._lock:
            for (topic, p), part in list(self._parts.items()):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                pos = part.position()
                pos = low if pos is None else pos  # nothing stored yet: consuming from the beginning
                if high <= pos:
                    continue
                self._deferred.defer(topic, p, pos, high - 1, CLASSES, high - pos, time.time())
                self._parts[(topic, p)] = _Partition(part.sequencing, part.committed, high)
                jumps.append(TopicPartition(topic, p, high))
                deferred += high - pos
        for tp in jumps:
            consumer.seek(tp)
        if jumps:
            self.report.shed += deferred
            self._log.warning(
                "backlog_deferred",
                messages=deferred,
                partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in jumps],
                level=self._control.level.name,
            )

    def _backfill_step(self) -> None:
        """Land one chunk of the oldest pending deferred range of an owned partition."""
        with self._lock:
            found = self._deferred.next_range(self._parts)
            if found is None:
                return
            topic, p, r = found
            generation = {(topic, p): self._parts[(topic, p)]}
        chunk = self._backfill.read(topic, p, r.first, r.last)
        if chunk.lost_to >= 0:
            self._record_lost(topic, p, chunk.first, chunk.lost_to, r.classes)
            return
        if chunk.read_to < chunk.first:
            return
        stream = self._stream_of[topic]
        assert self._shedder is not None or "tier1" in r.classes
        wanted: list[Message] = []
        by_class: dict[str, int] = {}
        for m in chunk.messages:
            c = self._class_of(stream, m.key())
            if c in r.classes:
                wanted.append(m)
                by_class[c] = by_class.get(c, 0) + 1
        self._process_topic(topic, wanted, generation, backfill=chunk)
        _add_counts(self.report.backfilled_by_class, by_class)
        self._log.info(
            "backfilled",
            topic=topic,
            partition=p,
            first=chunk.first,
            last=chunk.read_to,
            messages=len(wanted),
            pending=self._deferred.pending(self._parts)[0],
        )

    def _class_of(self, stream: str, key: bytes | None) -> str:
        return self._shedder.class_of(stream, key) if self._shedder is not None else "tier1"

    def _record_lost(self, topic: str, p: int, first: int, last: int, classes: frozenset[str]) -> None:
        """Kafka deleted records of a deferred range before the backfill: say so, loudly."""
        stream = self._stream_of[topic]
        with self._lock:
            lost = self._deferred.lose(topic, p, first, last)
            part = self._parts.get((topic, p))
            gaps = 0
            if part is not None:
                gaps = part.sequencing.tracker.declare_lost(
                    lambda symbol: self._class_of(stream, symbol.encode()) in classes
                )
        self.report.deferred_lost += lost
        self._log.error(
            "deferred_lost",
            topic=topic,
            partition=p,
            first=first,
            last=last,
            messages=lost,
            gaps_lost=gaps,
            reason="retention deleted the records before they were backfilled",
        )

    def _idle_for(self, now: float, last_data: float) -> float:
        if self._assigned_at is None:
            return 0.0
        return now - max(last_data, self._assigned_at)

    def _caught_up(self, high_watermarks: dict[tuple[str, int], int] | None = None) -> bool:
        """True when every owned partition has been read to its high watermark (nothing new).

        ``high_watermarks``: those a fetched batch came with (no broker round trip); without them
        the broker is asked, on the fetch thread.
        """
        assert self._fetcher is not None
        with self._lock:
            positions = {
                k: (p.consumed if p.consumed is not None else p.committed) for k, p in self._parts.items()
            }
        if high_watermarks is None:
            high_watermarks = self._fetcher.call(lambda c: _query_high_watermarks(c, positions), wait=60)
            assert high_watermarks is not None
        for key, pos in positions.items():
            high = high_watermarks.get(key, -1)
            if high < 0 or high > (pos or 0):  # negative: watermark not known yet
                return False
        return True

    def _drained(self) -> bool:
        with self._lock:
            return (
                self.buffer.rows == 0
                and not self._deferred.unsaved
                and not self._deferred.has_pending(self._parts)  # a backfill still to run
                and all(p.consumed in (None, p.committed) for p in self._parts.values())
            )

    # -- committing --------------------------------------------------------------------------

    def _collect(self) -> FlushWork:
        """Called by the committer: swap the buffer out with the offsets and gap changes it covers.

        All under the ingest lock, so no batch can land in between: offsets never run ahead of rows.
        """
        now_us = time.time_ns() // 1000
        lost_after = int(self._s.ingest.gap_lost_after_s * 1e6)
        with self._lock:
            content = self.buffer.take()
            work: dict[str, StreamWork] = {}
            for (topic, p), part in self._parts.items():
                stream = self._stream_of[topic]
                sw = work.setdefault(topic, StreamWork(stream, topic))
                if part.consumed is not None and part.consumed != part.committed:
                    sw.offsets[p] = part.consumed
                    sw.expected[p] = part.committed
                if self._deferred.changed(topic, p):
                    sw.expected.setdefault(p, part.committed)
                    sw.ledger_changed = True
                tracker = part.sequencing.tracker
                tracker.expire(now_us, lost_after)
                table = TABLE_FOR_STREAM[stream]
                pending = self._deferred.pending_classes(topic, p)
                for ex, sym, sess in tracker.take_dirty():
                    records = tracker.gaps(ex, sym, sess)
                    if pending and self._class_of(stream, sym.encode()) in pending:
                        records = [
                            replace(g, status="deferred") if g.status == "open" else g for g in records
                        ]
                    sw.gaps[stream_key(table, ex, sym, sess)] = records
            for sw in work.values():
                owned = [(sw.topic, p) for p in sw.expected]
                sw.deferred = self._deferred.for_commit(owned)
            self._deferred.saved()
        return FlushWork(content, list(work.values()))

    def _on_committed(self, sw: StreamWork) -> None:
        with self._lock:
            for p, off in sw.offsets.items():
                part = self._parts.get((sw.topic, p))
                if part is not None:
                    part.committed = off
                self._advisory.append(TopicPartition(sw.topic, p, off))

    def _commit_advisory(self) -> None:
        with self._lock:
            pending, self._advisory = self._advisory, []
        if pending and self._fetcher is not None:
            self._fetcher.call(lambda c: self._commit_offsets(c, pending))

    def _commit_offsets(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as e:  # advisory only: lag metrics may lag, nothing else depends on it
            self._log.warning("advisory_commit_failed", error=str(e))
            self.metrics.error("advisory_commit", e)

    # -- rebalancing -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        now_us = time.time_ns() // 1000
        by_topic: dict[str, list[int]] = defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp.partition)
        start: dict[tuple[str, int], int | None] = {}
        for topic, ps in by_topic.items():
            stream = self._stream_of[topic]
            writer = self._writers[stream]
            writer.table.refresh()
            stored = read_offsets(writer.table)
            offsets = stored.for_topic(topic)
            states = restore_partitions(
                writer.table,
                self._tables[GAPS_TABLE],
                writer.name,
                ps,
                stored.snapshot_id,
                self._s.ingest,
                now_us,
            )
            with self._lock:
                for p in ps:
                    self._parts[(topic, p)] = _Partition(states[p], offsets.get(p))
                    start[(topic, p)] = offsets.get(p)
                self._deferred.adopt(stored.deferred, topic, ps)
        for tp in partitions:
            off = start[(tp.topic, tp.partition)]
            tp.offset = off if off is not None else OFFSET_BEGINNING
        consumer.assign(partitions)
        self._assigned_at = time.monotonic()
        self._log.info(
            "assigned", partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions]
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Hand the partitions over cleanly: commit what is buffered, then forget them.

        The next owner then starts exactly where this process stopped, nothing is read twice, and
        a reader never finds those rows in neither place (``docs/hybrid-read.md``). Batches fetched
        before the revoke but not yet processed are left to the next owner (``revoking``).
        """
        with self._lock:
            for tp in partitions:
                part = self._parts.get((tp.topic, tp.partition))
                if part is not None:
                    part.revoking = True
        try:
            self._committer.flush_now(then=lambda: self._forget(partitions))
        except Exception as e:  # the loop stops ingest on it; the partitions are forgotten anyway
            self._log.error("revoke_commit_failed", error=str(e), exception=type(e).__name__)
            self.metrics.error("revoke_commit", e)
            self._committer.error = e
            self._forget(partitions)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        consumer.unassign()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            by_table: dict[str, set[int]] = defaultdict(set)
            for tp in partitions:
                part = self._parts.pop((tp.topic, tp.partition), None)
                if part is not None:  # its sequencing totals stay in the exported counters
                    self._collector.retire(self._table_of(tp.topic), part.sequencing)
                self._deferred.forget(tp.topic, tp.partition)
                by_table[TABLE_FOR_STREAM[self._stream_of[tp.topic]]].add(tp.partition)
            dropped = sum(self.buffer.drop_partitions(t, ps) for t, ps in by_table.items())
        self._log.info(
            "revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions], dropped_rows=dropped
        )

    def _write_status(self) -> None:
        st = self._control.status()
        with self._lock:
            owned = set(self._parts)
            pending, oldest = self._deferred.pending(owned)
        status = IngestStatus(
            writer=self.writer_id,
            pid=os.getpid(),
            updated_at=time.time(),
            level=int(st.level),
            level_name=st.level.name,
            level_since=st.since,
            lag=self._lag(),
            memory=round(self._control.memory, 4),
            memory_budget_bytes=self._control.budget_bytes,
            buffer_rows=self.buffer.rows,
            buffer_bytes=self.buffer.nbytes,
            paused=self._paused,
            pending_backfill=pending,
            oldest_pending_since=oldest,
            shed=self.report.shed,
            backfilled=self.report.backfilled,
            deferred_lost=self.report.deferred_lost,
            partitions=sorted(f"{t}[{p}]" for t, p in owned),
            live_endpoint=self.live_endpoint,
            metrics_endpoint=self.metrics_endpoint,
        )
        try:
            write_status(self._s.ingest.status_dir, status)
        except OSError as e:  # status is for operators; ingest goes on without it
            self._log.warning("status_write_failed", error=str(e), path=str(self._s.ingest.status_dir))
            self.metrics.error("status_write", e)

    def _partition_facts(self) -> list[PartitionFacts]:
        """Each owned partition as the metrics collector reads it (at scrape time, not per batch)."""
        out: list[PartitionFacts] = []
        with self._lock:
            for (topic, p), part in self._parts.items():
                high, pos = self._high.get((topic, p)), part.position()
                pending, oldest = self._deferred.pending({(topic, p)})
                tracker = part.sequencing.tracker
                deferred_gaps = 0
                classes = self._deferred.pending_classes(topic, p) if pending else frozenset()
                if classes:  # bounded by ingest.tracker_max_open_gaps, and only while shed work waits
                    stream = self._stream_of[topic]
                    deferred_gaps = sum(
                        1 for g in tracker.open_gaps() if self._class_of(stream, g.symbol.encode()) in classes
                    )
                out.append(
                    PartitionFacts(
                        topic,
                        p,
                        self._table_of(topic),
                        None if high is None else max(0, high - (pos or 0)),
                        tracker.stats(),
                        part.sequencing.dedup.stats(),
                        pending,
                        oldest,
                        deferred_gaps,
                    )
                )
        return out

    def _log_progress(self) -> None:
        self._log.info(
            "progress",
            consumed=self.report.consumed,
            buffered=self.buffer.rows,
            commits=self._committer.commits,
            duplicates=self.report.duplicates,
            rejected=sum(self.report.rejected.values()),
        )


def _query_high_watermarks(
    consumer: Consumer, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """High watermarks asked of the broker (one round trip per partition)."""
    return {
        (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
        for topic, p in partitions
    }


def _keep_newest(into: list[Any], new: list[Any], keep: int) -> None:
    into += new
    if len(into) > keep:
        del into[: len(into) - keep]


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, n in counts.items():
        into[k] = into.get(k, 0) + n


def _last_offsets(partitions: np.ndarray, offsets: np.ndarray) -> dict[int, int]:
    """Highest offset per partition in a batch (offsets only grow within a partition)."""
    uniq, last = np.unique(partitions[::-1], return_index=True)
    return {int(p): int(offsets[len(offsets) - 1 - i]) for p, i in zip(uniq, last, strict=True)}
