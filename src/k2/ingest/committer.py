"""The commit path: the only code that writes k2's tables.

A background thread so that writing Parquet and committing to the catalog overlaps with
consuming the next batches (pyarrow and the catalog release the GIL for most of that work). It
flushes when the live buffer holds ``flush_rows`` rows or its oldest row is ``flush_seconds`` old,
or when asked (idle exit, shutdown, revoke).

One flush, in order:
1. under the ingest lock, swap the buffer out together with each partition's consumed position
   and the tracker's changed gap records, so rows, offsets and gaps describe the same moment
   (the taken rows stay readable in the buffer until step 3 has made them visible in Iceberg);
2. flush the DLQ producer: every refused message up to those offsets is safely in Kafka;
3. per table, append rows + offsets in one snapshot (``TableWriter`` checks continuity); the
   tables are committed in parallel threads (sorting and Parquet encoding release the GIL), so
   the commit that ends a burst takes as long as the largest table, not the sum of all three.
   A commit that fails on the rows themselves (``k2.lake.probe`` finds which) does not stop
   ingest: those rows are set aside to the DLQ (stage ``commit``), the DLQ is flushed, and the
   rest land with the same offsets; a failure no row explains is raised as before;
4. rewrite the changed streams' rows in ``sequence_gaps``;
5. every so often, expire old snapshots.
A crash between 3 and 4 is repaired on restart (the tracker is rebuilt from stored rows and the
ledger, and re-persists what the ledger lacks).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import In
from pyiceberg.table import Table

from k2.config import IcebergSettings, IngestSettings
from k2.deferred_ledger import DeferredLedger
from k2.errors import CommitConflict
from k2.ingest.dlq import DeadLetterQueue
from k2.ingest.metrics import TableFacts, table_facts
from k2.lake.append import day_numbers
from k2.lake.maintenance import expire_snapshots
from k2.lake.probe import unwritable_rows
from k2.lake.tables import GAPS_SCHEMA, market_arrow_schema
from k2.lake.writer import TableWriter
from k2.live_buffer import BufferContent, LiveBuffer
from k2.logs import get_logger
from k2.observability import IngestMetrics
from k2.sequence_tracker import Gap
from k2.wire import Stream

__all__ = ["Committer", "FlushWork", "SetAside", "StreamWork", "prepare_rows"]

SetAside = Callable[[str, pa.Table, BaseException], None]
"""Dead-letter rows of a topic that could not be written, with the error that showed it."""

_log = get_logger("committer")


@dataclass(slots=True)
class StreamWork:
    """What one table's commit covers: next offsets per partition and where each started."""

    stream: Stream
    topic: str
    offsets: dict[int, int] = field(default_factory=dict)
    expected: dict[int, int | None] = field(default_factory=dict)
    gaps: dict[str, list[Gap]] = field(default_factory=dict)  # stream_key -> all records of that stream
    # This process's deferred ledger for the topic's owned partitions; ``ledger_changed``: a shed
    # or backfill since the last commit, so the table must get a snapshot even without new offsets.
    deferred: DeferredLedger | None = None
    ledger_changed: bool = False


@dataclass(slots=True)
class FlushWork:
    content: BufferContent
    streams: list[StreamWork]


def stream_key(table: str, exchange: str, symbol: str, session: int) -> str:
    return f"{table}/{exchange}/{symbol}/{session}"


def gaps_to_arrow(table_name: str, records: dict[str, list[Gap]]) -> pa.Table:
    rows = [
        {
            "stream_key": key,
            "table": table_name,
            "exchange": g.exchange,
            "symbol": g.symbol,
            "session": g.session,
            "first_seq": g.first_seq,
            "last_seq": g.last_seq,
            "detected_at": g.detected_at,
            "status": g.status,
            "filled_at": g.filled_at,
        }
        for key, gaps in records.items()
        for g in gaps
    ]
    return pa.Table.from_pylist(rows, schema=GAPS_SCHEMA)


def prepare_rows(stream: Stream, rows: pa.Table) -> pa.Table:
    """Buffered rows as they are written: sorted by (day of ts, symbol, ts), in the table's strict
    schema. Grouping by day first lets the append slice partitions instead of copying them."""
    keys = pa.table({"day": day_numbers(rows["ts"]), "symbol": rows["symbol"], "ts": rows["ts"]})
    order = pc.sort_indices(
        keys, sort_keys=[("day", "ascending"), ("symbol", "ascending"), ("ts", "ascending")]
    )
    return rows.take(order).cast(market_arrow_schema(stream))


class Committer:
    def __init__(
        self,
        buffer: LiveBuffer,
        writers: dict[Stream, TableWriter],
        gaps_table: Table,
        dlq: DeadLetterQueue,
        collect: Callable[[], FlushWork],
        on_committed: Callable[[StreamWork], None],
        ingest: IngestSettings,
        iceberg: IcebergSettings,
        set_aside: SetAside,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self._buffer = buffer
        self._writers = writers
        self._gaps = gaps_table
        self._dlq = dlq
        self._collect = collect
        self._on_committed = on_committed
        self._set_aside = set_aside
        self.rows_set_aside = 0
        # Degradation at SOFT and above: commits this many times larger and further apart.
        self.scale = 1
        self._ingest = ingest
        self._iceberg = iceberg
        self._wake = threading.Condition()
        self._flush_requested = False
        self._stopping = False
        self.commit_lock = threading.Lock()  # held for the whole of a flush; revoke waits on it
        self.error: BaseException | None = None
        self.rows_committed: dict[str, int] = {}
        self.last_rows_committed_at: float | None = None
        # Read by the metrics collector at scrape time: wall clock of each table's last commit,
        # and its size as the metadata said then.
        self.last_commit_at: dict[str, float] = {}
        self.table_facts: dict[str, TableFacts] = {}
        self._metrics = metrics if metrics is not None else IngestMetrics(process=False)
        # Every series exists from the start at 0, so rate()/increase() see a process's first failure.
        for writer in writers.values():
            self._metrics.commit_retries.labels(writer.name)
            for reason in ("offset_conflict", "unwritable_rows", "storage"):
                self._metrics.commit_failures.labels(writer.name, reason)
        self._commits_by_table: dict[str, int] = {}
        self._stats_lock = threading.Lock()  # table commits run in parallel threads
        self._thread = threading.Thread(target=self._run, name="k2-committer", daemon=True)

    @property
    def commits(self) -> int:
        with self._stats_lock:
            return sum(self._commits_by_table.values())

    def start(self) -> None:
        self._thread.start()

    def request_flush(self) -> None:
        with self._wake:
            self._flush_requested = True
            self._wake.notify_all()

    def flush_now(self, then: Callable[[], None] | None = None) -> None:
        """Flush on the caller's thread (used at shutdown and on revoke), serialised with the thread;
        ``then`` runs before any other flush may start (a revoke forgets its partitions there)."""
        with self.commit_lock:
            self._flush_locked()
            if then is not None:
                then()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=120)

    def _due(self) -> bool:
        return (
            self._flush_requested
            or self._buffer.rows >= self._ingest.flush_rows * self.scale
            or self._buffer.age(time.monotonic()) >= self._ingest.flush_seconds * self.scale
        )

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    self._wake.wait_for(lambda: self._stopping or self._due(), timeout=0.2)
                    if self._stopping:
                        return
                    if not self._due():
                        continue
                    self._flush_requested = False
                self._flush()
        except BaseException as e:  # surfaced to the consumer loop, which stops ingest
            _log.error("commit_failed", error=str(e), exception=type(e).__name__)
            self._metrics.error("committer", e)
            self.error = e

    def _flush(self) -> None:
        with self.commit_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        work = self._collect()
        if not any(s.offsets or s.gaps or s.ledger_changed for s in work.streams):
            return
        self._dlq.flush()
        if self._ingest.debug_commit_delay_s:  # slow storage, simulated (benchmarks, tests)
            time.sleep(self._ingest.debug_commit_delay_s)
        todo = [s for s in work.streams if s.offsets or s.ledger_changed]
        if len(todo) == 1:
            self._commit_stream(work.content, todo[0])
        elif todo:
            with ThreadPoolExecutor(len(todo), thread_name_prefix="k2-commit") as pool:
                futures = [pool.submit(self._commit_stream, work.content, s) for s in todo]
            # Every table's commit has finished (landed or failed) before an error is raised.
            for f in futures:
                f.result()
        self._write_gaps(work.streams)
        # Every table's commit is visible: nothing taken in this flush needs the buffer now.
        self._buffer.release(work.content.token)

    def _commit_stream(self, content: BufferContent, s: StreamWork) -> None:
        writer = self._writers[s.stream]
        rows = content.table(writer.name)
        rows = market_arrow_schema(s.stream).empty_table() if rows is None else prepare_rows(s.stream, rows)
        m = self._metrics
        try:
            result = writer.commit(rows, s.offsets, s.expected, s.deferred)
        except CommitConflict:
            m.commit_failures.labels(writer.name, "offset_conflict").inc()
            raise
        except Exception as e:
            bad = unwritable_rows(writer.table, rows)
            if bad is None:  # not the rows' fault: the catalog or storage; ingest stops
                m.commit_failures.labels(writer.name, "storage").inc()
                raise
            m.commit_failures.labels(writer.name, "unwritable_rows").inc()
            rows = self._set_aside_rows(s, rows, bad, e)
            result = writer.commit(rows, s.offsets, s.expected, s.deferred)
        m.commit_duration.labels(writer.name).observe(result.seconds)
        m.commit_rows.labels(writer.name).observe(rows.num_rows)
        if result.attempts > 1:
            m.commit_retries.labels(writer.name).inc(result.attempts - 1)
        with self._stats_lock:
            self.last_commit_at[writer.name] = time.time()
            self.rows_committed[writer.name] = self.rows_committed.get(writer.name, 0) + rows.num_rows
            if rows.num_rows:
                self.last_rows_committed_at = time.time()
            table_commits = self._commits_by_table[writer.name] = (
                self._commits_by_table.get(writer.name, 0) + 1
            )
        self._on_committed(s)
        # The commit is visible and the offsets moved on: readers now find these rows in Iceberg.
        self._buffer.release(content.token, writer.name)
        _log.info(
            "committed",
            table=writer.name,
            rows=rows.num_rows,
            snapshot_id=result.snapshot_id,
            seconds=round(result.seconds, 3),
            offsets=s.offsets,
        )
        if table_commits % self._iceberg.maintenance_every_commits == 0:
            expired = expire_snapshots(
                writer.table, self._iceberg.expire_snapshots_older_than_s, self._iceberg.keep_min_snapshots
            )
            _log.info("snapshots_expired", table=writer.name, count=expired)
            m.maintenance_runs.labels(writer.name, "expire_snapshots").inc()
            m.snapshots_expired.labels(writer.name).inc(expired)
        try:  # after expiry, so the snapshot count is current
            self.table_facts[writer.name] = table_facts(writer.table)
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # metrics only: ingest goes on
            _log.warning("table_facts_unreadable", table=writer.name, error=str(e))
            m.error("table_facts", e)

    def _set_aside_rows(
        self, s: StreamWork, rows: pa.Table, bad: np.ndarray, error: BaseException
    ) -> pa.Table:
        """Dead-letter ``rows[bad]`` (flushed before the commit moves past them); the rest remain."""
        culprits = rows.take(bad)
        _log.error(
            "rows_set_aside",
            topic=s.topic,
            rows=len(bad),
            exception=type(error).__name__,
            error=str(error)[:500],
            offsets=list(
                zip(
                    culprits["kafka_partition"].to_pylist(), culprits["kafka_offset"].to_pylist(), strict=True
                )
            ),
        )
        self._set_aside(s.topic, culprits, error)
        self._dlq.flush()
        with self._stats_lock:
            self.rows_set_aside += len(bad)
        keep = np.ones(rows.num_rows, dtype=bool)
        keep[bad] = False
        return rows.filter(pa.array(keep))

    def _write_gaps(self, streams: list[StreamWork]) -> None:
        for s in streams:
            if not s.gaps:
                continue
            table_name = self._writers[s.stream].name
            rows = gaps_to_arrow(table_name, s.gaps)
            with warnings.catch_warnings():  # a stream's first gaps have no old rows to replace
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                self._gaps.overwrite(rows, overwrite_filter=In("stream_key", list(s.gaps)))
            _log.info("gaps_written", table=table_name, streams=len(s.gaps), records=rows.num_rows)
