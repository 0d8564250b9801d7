"""An ingest process's metrics endpoint: the scrape-time collector and the HTTP server serving it.

Most of what an operator wants to see is already counted by ingest for its own needs: the
``IngestReport``, the committer's rows and commit times, each partition's tracker and dedup
``stats()``, ``LoadControl``, the live buffer, the DLQ producer. :class:`IngestCollector` reads
them when Prometheus scrapes (copies of ints and small dicts, safe to read from the HTTP thread),
so those metrics cost the consume loop nothing. Names, types and help live in
``k2.observability.INGEST_SCRAPED``; histograms and event counters are observed per batch or per
commit through ``k2.observability.IngestMetrics``.

Tracker and dedup totals are per partition and go away with a revoked partition, so their last
values are kept per table (:meth:`IngestCollector.retire`): the exported counters never go back.

Each process serves ``/metrics`` on ``ingest.metrics_port`` (0: any free port) and writes the
address in its status file; :func:`file_sd_targets` turns the status directory into a Prometheus
``file_sd_configs`` target list, for ``k2 ingest --processes N`` on free ports.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from k2.dedup import DedupStats
from k2.ingest.report import IngestReport
from k2.ingest.sequencing import PartitionSequencing
from k2.ingest.status import IngestStatus
from k2.live_buffer import LiveBuffer
from k2.logs import get_logger
from k2.observability import INGEST_SCRAPED
from k2.sequence_tracker import TrackerStats

__all__ = [
    "IngestCollector",
    "MetricsServer",
    "PartitionFacts",
    "TableFacts",
    "file_sd_targets",
    "start_metrics_server",
    "table_facts",
]

_log = get_logger("metrics")

# The tracker and dedup totals exported per table, as (field of TrackerStats or DedupStats).
_TRACKER_TOTALS = ("gaps", "lost", "late", "lost_late", "resets")
_DEDUP_TOTALS = ("duplicates",)


@dataclass(frozen=True, slots=True)
class PartitionFacts:
    """What the collector reads of one owned partition (built under the ingest lock)."""

    topic: str
    partition: int
    table: str
    lag: int | None  # None: no high watermark seen yet
    tracker: TrackerStats
    dedup: DedupStats
    pending_backfill: int = 0
    oldest_pending_since: float | None = None  # wall clock
    deferred_gaps: int = 0


@dataclass(frozen=True, slots=True)
class TableFacts:
    """A table's size as its metadata says after a commit (no scan)."""

    snapshots: int
    data_files: int
    data_bytes: int
    rows: int


def table_facts(table: Any) -> TableFacts:
    """Read ``table``'s (a pyiceberg ``Table``) in-memory metadata: the current snapshot's totals."""
    snap = table.current_snapshot()
    summary = snap.summary if snap is not None and snap.summary is not None else None

    def total(key: str) -> int:
        value = summary.get(key) if summary is not None else None
        return int(value) if value is not None else 0

    return TableFacts(
        len(table.metadata.snapshots),
        total("total-data-files"),
        total("total-files-size"),
        total("total-records"),
    )


class _CommitterFacts(Protocol):
    rows_committed: dict[str, int]
    rows_set_aside: int
    last_commit_at: dict[str, float]
    table_facts: dict[str, TableFacts]


class _DlqFacts(Protocol):
    sent: int
    truncated: int
    refused: int


class _LoadFacts(Protocol):
    @property
    def level(self) -> int: ...

    @property
    def memory(self) -> float: ...

    @property
    def budget_bytes(self) -> int: ...


@dataclass(slots=True)
class _Retired:
    tracker: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TRACKER_TOTALS, 0))
    dedup: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_DEDUP_TOTALS, 0))


class IngestCollector(Collector):
    """Builds the ``INGEST_SCRAPED`` families from ingest's own counts at each scrape.

    ``partitions`` returns the owned partitions' facts (the app takes its lock for it);
    ``paused`` whether consumption is paused. ``clock`` is wall time, ``monotonic`` the clock
    the live buffer ages by.
    """

    def __init__(
        self,
        *,
        writer: str,
        report: IngestReport,
        committer: _CommitterFacts,
        dlq: _DlqFacts,
        control: _LoadFacts,
        buffer: LiveBuffer,
        partitions: Callable[[], list[PartitionFacts]],
        paused: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._report = report
        self._committer = committer
        self._dlq = dlq
        self._control = control
        self._buffer = buffer
        self._partitions = partitions
        self._paused = paused
        self._clock = clock
        self._monotonic = monotonic
        self._started_at = clock()
        self._retired: dict[str, _Retired] = {}
        self._retired_lock = threading.Lock()

    def retire(self, table: str, sequencing: PartitionSequencing) -> None:
        """Keep a partition's tracker and dedup totals as it leaves this process (revoke, loss)."""
        tracker, dedup = sequencing.tracker.stats(), sequencing.dedup.stats()
        with self._retired_lock:
            r = self._retired.setdefault(table, _Retired())
            for k in _TRACKER_TOTALS:
                r.tracker[k] += getattr(tracker, k)
            for k in _DEDUP_TOTALS:
                r.dedup[k] += getattr(dedup, k)

    def describe(self) -> Iterable[Metric]:
        return [spec.family() for spec in INGEST_SCRAPED.values()]

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        fams = {name: spec.family() for name, spec in INGEST_SCRAPED.items()}

        def put(name: str, value: float, *labels: str) -> None:
            fams[name].add_metric(list(labels), value)

        put("k2_ingest_info", 1, self._writer)
        self._collect_landing(put, now)
        self._collect_sequencing(put, now)
        self._collect_load(put)
        buf = self._buffer
        put("k2_ingest_live_buffer_rows", buf.rows)
        put("k2_ingest_live_buffer_bytes", buf.nbytes)
        put("k2_ingest_live_buffer_age_seconds", buf.age(self._monotonic()))
        return list(fams.values())

    # -- parts of a scrape ------------------------------------------------------------------

    def _collect_landing(self, put: Callable[..., None], now: float) -> None:
        c = self._committer
        for table, rows in dict(c.rows_committed).items():
            put("k2_ingest_rows_landed_total", rows, table)
        put("k2_ingest_rows_set_aside_total", c.rows_set_aside)
        last = dict(c.last_commit_at)
        for table, at in last.items():
            put("k2_ingest_last_commit_timestamp_seconds", at, table)
        put(
            "k2_ingest_time_since_last_commit_seconds",
            max(0.0, now - max(last.values(), default=self._started_at)),
        )
        for table, facts in dict(c.table_facts).items():
            put("k2_iceberg_snapshots", facts.snapshots, table)
            put("k2_iceberg_data_files", facts.data_files, table)
            put("k2_iceberg_data_bytes", facts.data_bytes, table)
            put("k2_iceberg_rows", facts.rows, table)
        put("k2_ingest_dlq_sent_total", self._dlq.sent)
        put("k2_ingest_dlq_truncated_total", self._dlq.truncated)
        put("k2_ingest_dlq_refused_total", self._dlq.refused)

    def _collect_sequencing(self, put: Callable[..., None], now: float) -> None:
        facts = self._partitions()
        with self._retired_lock:
            totals: dict[str, dict[str, int]] = {
                t: {**r.tracker, **r.dedup} for t, r in self._retired.items()
            }
        gauges: dict[str, dict[str, int]] = {}
        assigned: dict[str, int] = {}
        oldest: float | None = None
        for f in facts:
            t = totals.setdefault(f.table, dict.fromkeys(_TRACKER_TOTALS + _DEDUP_TOTALS, 0))
            for k in _TRACKER_TOTALS:
                t[k] += getattr(f.tracker, k)
            for k in _DEDUP_TOTALS:
                t[k] += getattr(f.dedup, k)
            g = gauges.setdefault(f.table, {"open": 0, "deferred": 0, "streams": 0, "pending": 0})
            g["open"] += f.tracker.open_gap_count
            g["deferred"] += f.deferred_gaps
            g["streams"] += f.dedup.entries
            g["pending"] += f.pending_backfill
            assigned[f.topic] = assigned.get(f.topic, 0) + 1
            if f.lag is not None:
                put("k2_ingest_consumer_lag_messages", f.lag, f.topic, str(f.partition))
            if f.oldest_pending_since is not None:
                oldest = f.oldest_pending_since if oldest is None else min(oldest, f.oldest_pending_since)
        for table, t in totals.items():
            put("k2_ingest_duplicates_total", t["duplicates"], table)
            put("k2_ingest_gaps_opened_total", t["gaps"], table)
            put("k2_ingest_gaps_lost_total", t["lost"], table)
            put("k2_ingest_gap_seqs_filled_total", t["late"], table)
            put("k2_ingest_late_arrivals_total", t["late"], table, "filled_gap")
            put("k2_ingest_late_arrivals_total", t["lost_late"], table, "after_lost")
            put("k2_ingest_sequence_resets_total", t["resets"], table)
        for table, g in gauges.items():
            put("k2_ingest_gaps_open", g["open"], table)
            put("k2_ingest_gaps_deferred", g["deferred"], table)
            put("k2_ingest_dedup_streams", g["streams"], table)
            put("k2_ingest_backfill_pending_messages", g["pending"], table)
        for topic, n in assigned.items():
            put("k2_ingest_partitions_assigned", n, topic)
        put("k2_ingest_backfill_pending_age_seconds", 0.0 if oldest is None else max(0.0, now - oldest))

    def _collect_load(self, put: Callable[..., None]) -> None:
        r, control = self._report, self._control
        put("k2_ingest_degradation_level", int(control.level))
        put("k2_ingest_degradation_transitions_total", r.level_changes)
        put("k2_ingest_memory_ratio", control.memory)
        put("k2_ingest_memory_budget_bytes", control.budget_bytes)
        put("k2_ingest_paused", int(self._paused()))
        put("k2_ingest_memory_pauses_total", r.memory_pauses)
        by_tier = dict(r.shed_by_class)
        for tier, n in by_tier.items():
            put("k2_ingest_messages_shed_total", n, tier)
        # A backlog deferred whole is counted in ``shed`` but by no tier (it is every tier).
        put("k2_ingest_messages_shed_total", max(0, r.shed - sum(by_tier.values())), "backlog")
        for tier, n in dict(r.backfilled_by_class).items():
            put("k2_ingest_messages_backfilled_total", n, tier)
        put("k2_ingest_backfill_lost_total", r.deferred_lost)


# -- the HTTP endpoint ----------------------------------------------------------------------------


class MetricsServer:
    """prometheus_client's HTTP server on its own thread; ``endpoint`` is the URL to scrape."""

    def __init__(self, server: Any, thread: threading.Thread, endpoint: str) -> None:
        self._server = server
        self._thread = thread
        self.endpoint = endpoint

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout_s)


def start_metrics_server(
    host: str, port: int, registry: CollectorRegistry, on_error: Callable[[BaseException], None] | None = None
) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0: any free port).

    A fixed port already taken (say a second process started with the same settings) falls back
    to a free port, with an error logged and ``on_error`` called: metrics are worth less than
    ingest, and the status file still advertises where they are.

    Raises:
        OSError: the address cannot be bound even on a free port.
    """
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as e:
        if port == 0 or e.errno != errno.EADDRINUSE:
            raise
        _log.error("metrics_port_in_use", host=host, port=port, fallback="a free port", error=str(e))
        if on_error is not None:
            on_error(e)
        server, thread = start_http_server(0, host, registry)
    advertised = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    if ":" in advertised:
        advertised = f"[{advertised}]"
    endpoint = f"http://{advertised}:{server.server_port}/metrics"
    _log.info("metrics_server_started", endpoint=endpoint)
    return MetricsServer(server, thread, endpoint)


def file_sd_targets(
    statuses: Iterable[IngestStatus], now: float, stale_after_s: float
) -> list[dict[str, Any]]:
    """A Prometheus ``file_sd_configs`` document: one target group per live ingest process.

    ``statuses`` are ``k2.ingest.status.read_statuses(ingest.status_dir)``; a status older than
    ``stale_after_s`` (a process that crashed) or without an endpoint is left out.
    """
    groups: list[dict[str, Any]] = []
    for s in statuses:
        if s.metrics_endpoint is None or now - s.updated_at > stale_after_s:
            continue
        url = urlsplit(s.metrics_endpoint)
        groups.append(
            {
                "targets": [url.netloc],
                "labels": {"writer": s.writer, "__metrics_path__": url.path or "/metrics"},
            }
        )
    return sorted(groups, key=lambda g: str(g["targets"][0]))
