"""k2's Prometheus metrics: the one place they are defined.

Every component that counts something takes its metrics from here instead of registering its own
collectors, so the full list of names, labels and buckets is in one file and a scrape of any k2
process reads the same vocabulary (``docs/observability.md`` lists them all; a unit test checks
the list against what the registries export).

Two kinds of ingest metric, both defined here:
- *observed* ones (histograms, and counters of events nothing else counts) are prometheus_client
  objects on :class:`IngestMetrics`, updated once per batch or per commit, never per message;
- *scraped* ones (``INGEST_SCRAPED``) are values ingest already keeps (``IngestReport``, the
  committer's counts, the tracker and dedup ``stats()``, the live buffer): the collector in
  ``k2.ingest.metrics`` reads them when Prometheus scrapes, so they cost the hot path nothing.

Each metrics object owns its ``CollectorRegistry`` (never the process-global default), so tests and
several apps in one process can each build one without "Duplicated timeseries" errors.

Conventions: ``k2_`` prefix (the standard ``process_*`` and ``python_*`` collectors aside), base
units (``_seconds``, ``_bytes``), counters end in ``_total``, histograms for latencies. Label
values stay bounded: tables, topics, partitions, tiers, reasons, levels, route templates
(``/v1/trades``, not the raw path with its query), exception class names; never a symbol.
"""

from __future__ import annotations

import contextlib
import gc
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE",
    "INGEST_SCRAPED",
    "IngestMetrics",
    "Metrics",
    "Scraped",
    "register_process_metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Query latencies: a snapshot lookup answers in milliseconds, a full-day SQL scan in seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# An Iceberg commit: ~30 ms steady state on local files, seconds on object storage or under retries.
_COMMIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Rows per table commit: flush_rows is 500,000 by default (twice that at SOFT and above).
_ROWS_BUCKETS = (0, 100, 1_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000)
# Kafka create time -> live buffer: milliseconds when keeping up, minutes when degraded or replaying.
_FRESHNESS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
)  # fmt: skip
# A young collection takes microseconds; a full one over a large heap, up to a second.
_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


class Metrics:
    """The API process's metrics (request latency, SQL rejections, errors) and process metrics.

    ``process``: also register the process and GC collectors and the GC pause histogram
    (see :func:`register_process_metrics`).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.api_requests = Counter(
            "k2_api_requests_total",
            "HTTP requests answered by the API, by route template and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.api_request_duration = Histogram(
            "k2_api_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_sql_rejected = Counter(
            "k2_api_sql_rejected_total",
            "SQL statements refused before running, by reason (too_long, not_select, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            "k2_api_errors_total",
            "Unexpected exceptions the API answered with 500, by exception class.",
            ["exception"],
            registry=self.registry,
        )
        if process:
            register_process_metrics(self.registry)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (serve with ``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class IngestMetrics:
    """An ingest process's observed metrics; the scraped ones join through :meth:`register`.

    Every method here is called per batch, per commit or per rare event (an error, a dead
    letter), never per message.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "k2_ingest_messages_consumed_total",
            "Messages taken from Kafka (live fetches, before admission and validation), by table.",
            ["table"],
            registry=r,
        )
        self.dead_letters = Counter(
            "k2_ingest_dead_letters_total",
            "Messages sent to the DLQ, by table, stage (decode, validate, sequence, commit) and rule.",
            ["table", "stage", "reason"],
            registry=r,
        )
        self.freshness = Histogram(
            "k2_ingest_freshness_seconds",
            "Kafka create time to the row in the live buffer, sampled (<= 32 per batch), by tier.",
            ["tier"],
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "k2_ingest_commit_duration_seconds",
            "One table's Iceberg commit (rows + offsets in one snapshot, retries included), by table.",
            ["table"],
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.commit_rows = Histogram(
            "k2_ingest_commit_rows",
            "Rows landed by one table commit, by table.",
            ["table"],
            buckets=_ROWS_BUCKETS,
            registry=r,
        )
        self.commit_retries = Counter(
            "k2_ingest_commit_retries_total",
            "Commit attempts retried after losing a catalog race to another writer, by table.",
            ["table"],
            registry=r,
        )
        self.commit_failures = Counter(
            "k2_ingest_commit_failures_total",
            "Table commits that failed, by table and reason (offset_conflict, unwritable_rows: "
            "the rows were set aside and the rest landed, storage: ingest stops).",
            ["table", "reason"],
            registry=r,
        )
        self.maintenance_runs = Counter(
            "k2_ingest_maintenance_runs_total",
            "Table maintenance runs after commits, by table and operation.",
            ["table", "operation"],
            registry=r,
        )
        self.snapshots_expired = Counter(
            "k2_ingest_snapshots_expired_total",
            "Iceberg snapshots expired by maintenance, by table.",
            ["table"],
            registry=r,
        )
        self.errors = Counter(
            "k2_ingest_errors_total",
            "Exceptions ingest caught, logged and went on from (or stopped on), by where and class.",
            ["where", "exception"],
            registry=r,
        )
        # Resolved once: a labelled child lookup costs a lock and a dict probe per call.
        self._freshness: dict[str, Any] = {}
        if process:
            register_process_metrics(r)

    def register(self, collector: Any) -> None:
        """Add a scrape-time collector (``k2.ingest.metrics.IngestCollector``) to the registry."""
        self.registry.register(collector)

    def observe_freshness(self, samples: Iterable[tuple[float, str, float]]) -> None:
        """One batch's freshness samples: (wall clock s, tier, seconds since create time)."""
        for _, tier, seconds in samples:
            child = self._freshness.get(tier)
            if child is None:
                child = self._freshness[tier] = self.freshness.labels(tier)
            child.observe(seconds)

    def dead_lettered(self, table: str, reasons: Iterable[tuple[str, str]]) -> None:
        """Count one batch's dead letters, each given as its (stage, rule)."""
        counts: dict[tuple[str, str], int] = {}
        for key in reasons:
            counts[key] = counts.get(key, 0) + 1
        for (stage, rule), n in counts.items():
            self.dead_letters.labels(table, stage, rule).inc(n)

    def error(self, where: str, exc: BaseException | str) -> None:
        """Count an exception caught at ``where`` (the caller logs it)."""
        name = exc if isinstance(exc, str) else type(exc).__name__
        self.errors.labels(where, name).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -- scraped at collect time ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scraped:
    """A metric whose value is read when Prometheus scrapes (see ``k2.ingest.metrics``)."""

    name: str  # counters include the ``_total`` suffix
    kind: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...] = ()

    def family(self) -> CounterMetricFamily | GaugeMetricFamily:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)


def _scraped(*specs: Scraped) -> dict[str, Scraped]:
    return {s.name: s for s in specs}


INGEST_SCRAPED: dict[str, Scraped] = _scraped(
    Scraped("k2_ingest_info", "gauge", "Always 1; names this process's writer id.", ("writer",)),
    # landing
    Scraped("k2_ingest_rows_landed_total", "counter", "Rows committed to Iceberg, by table.", ("table",)),
    Scraped(
        "k2_ingest_rows_set_aside_total",
        "counter",
        "Rows a commit could not write, sent to the DLQ instead (stage commit).",
    ),
    Scraped(
        "k2_ingest_time_since_last_commit_seconds",
        "gauge",
        "Seconds since this process's last table commit (or since it started, before the first).",
    ),
    Scraped(
        "k2_ingest_last_commit_timestamp_seconds",
        "gauge",
        "Wall clock of the last commit, by table.",
        ("table",),
    ),
    # DLQ producer
    Scraped("k2_ingest_dlq_sent_total", "counter", "Dead letters handed to the DLQ producer."),
    Scraped("k2_ingest_dlq_truncated_total", "counter", "Dead letters cut to fit the DLQ topic."),
    Scraped(
        "k2_ingest_dlq_refused_total",
        "counter",
        "Dead letters the broker refused as too large (cut further and sent again).",
    ),
    # sequencing (tracker + dedup, summed over the partitions this process owns and has owned)
    Scraped("k2_ingest_duplicates_total", "counter", "Repeated identities dropped by dedup.", ("table",)),
    Scraped("k2_ingest_gaps_opened_total", "counter", "Sequence gaps detected.", ("table",)),
    Scraped(
        "k2_ingest_gaps_lost_total",
        "counter",
        "Open gaps given up: expired, pushed out by the open-gap bound, or their deferred range lost.",
        ("table",),
    ),
    Scraped(
        "k2_ingest_gap_seqs_filled_total",
        "counter",
        "Missing seqs that arrived late and filled (part of) an open gap.",
        ("table",),
    ),
    Scraped(
        "k2_ingest_late_arrivals_total",
        "counter",
        "Seqs that arrived behind their stream's next seq: filled a gap, or came after it was lost.",
        ("table", "outcome"),
    ),
    Scraped(
        "k2_ingest_sequence_resets_total",
        "counter",
        "Streams that restarted at a new session.",
        ("table",),
    ),
    Scraped("k2_ingest_gaps_open", "gauge", "Open gaps right now.", ("table",)),
    Scraped(
        "k2_ingest_gaps_deferred",
        "gauge",
        "Open gaps of symbols whose tier awaits backfill (recorded as 'deferred', not missing).",
        ("table",),
    ),
    Scraped("k2_ingest_dedup_streams", "gauge", "Stream keys dedup remembers.", ("table",)),
    # load: degradation, shedding, backfill
    Scraped(
        "k2_ingest_degradation_level",
        "gauge",
        "Degradation level: 0 NORMAL, 1 SOFT, 2 GRACEFUL, 3 AGGRESSIVE, 4 CIRCUIT_BREAK.",
    ),
    Scraped("k2_ingest_degradation_transitions_total", "counter", "Degradation level changes."),
    Scraped(
        "k2_ingest_memory_ratio", "gauge", "RSS / the ingest memory budget, as last measured (1.0 = full)."
    ),
    Scraped("k2_ingest_memory_budget_bytes", "gauge", "The ingest memory budget."),
    Scraped("k2_ingest_paused", "gauge", "1 while consumption is paused (buffer full or memory bound)."),
    Scraped("k2_ingest_memory_pauses_total", "counter", "Consumption pauses for memory."),
    Scraped(
        "k2_ingest_messages_shed_total",
        "counter",
        "Messages deferred by load shedding, by tier (low, tier1..tier3); tier 'backlog': a "
        "backlog deferred whole at AGGRESSIVE. Backfilled later, never lost.",
        ("tier",),
    ),
    Scraped(
        "k2_ingest_messages_backfilled_total",
        "counter",
        "Shed messages re-read from Kafka and landed by the backfill, by tier.",
        ("tier",),
    ),
    Scraped(
        "k2_ingest_backfill_lost_total",
        "counter",
        "Deferred messages Kafka's retention deleted before the backfill reached them.",
    ),
    Scraped(
        "k2_ingest_backfill_pending_messages",
        "gauge",
        "Shed messages not yet backfilled, in this process's partitions, by table.",
        ("table",),
    ),
    Scraped(
        "k2_ingest_backfill_pending_age_seconds",
        "gauge",
        "Age of the oldest shed message waiting for the backfill (0 when none).",
    ),
    # Kafka
    Scraped("k2_ingest_partitions_assigned", "gauge", "Partitions this process owns.", ("topic",)),
    Scraped(
        "k2_ingest_consumer_lag_messages",
        "gauge",
        "High watermark minus this process's position, by topic and partition.",
        ("topic", "partition"),
    ),
    # live buffer
    Scraped("k2_ingest_live_buffer_rows", "gauge", "Rows in the live buffer waiting for a commit."),
    Scraped(
        "k2_ingest_live_buffer_bytes",
        "gauge",
        "Arrow bytes the live buffer holds (waiting or being committed).",
    ),
    Scraped("k2_ingest_live_buffer_age_seconds", "gauge", "Age of the oldest row waiting for a commit."),
    # Iceberg tables, from the metadata of this process's last commit (no scan)
    Scraped("k2_iceberg_snapshots", "gauge", "Snapshots in the table's metadata.", ("table",)),
    Scraped("k2_iceberg_data_files", "gauge", "Data files in the current snapshot.", ("table",)),
    Scraped("k2_iceberg_data_bytes", "gauge", "Bytes of data files in the current snapshot.", ("table",)),
    Scraped("k2_iceberg_rows", "gauge", "Rows in the current snapshot.", ("table",)),
)


# -- process: RSS, CPU, GC ----------------------------------------------------------------------


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Register ``process_*`` (RSS, CPU, fds), ``python_gc_*``, ``python_info`` and ``k2_gc_pause_seconds``.

    The pause histogram is fed by a ``gc.callbacks`` hook: two calls per collection, and ingest
    collects the young generation only every 200,000 allocations (``k2.ingest.process``). The
    hook holds the histogram weakly and is removed when the registry goes away.
    """
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:  # None where the interpreter lacks gc.get_stats
        GCCollector(registry=registry)
    pauses = Histogram(
        "k2_gc_pause_seconds",
        "Time the Python garbage collector stopped the process, by generation.",
        ["generation"],
        buckets=_GC_BUCKETS,
        registry=registry,
    )
    children = [pauses.labels(str(g)) for g in range(3)]
    hook = _GcPauseHook(children)
    gc.callbacks.append(hook)
    weakref.finalize(registry, _remove_hook, hook)


class _GcPauseHook:
    __slots__ = ("_children", "_started")

    def __init__(self, children: list[Any]) -> None:
        self._children = children
        self._started: float | None = None  # one collection at a time (under the GIL)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is not None:
            self._children[min(info.get("generation", 0), 2)].observe(time.perf_counter() - started)


def _remove_hook(hook: _GcPauseHook) -> None:
    with contextlib.suppress(ValueError):  # already gone
        gc.callbacks.remove(hook)
