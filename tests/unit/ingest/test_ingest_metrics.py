"""The ingest metrics endpoint: what ingest already counts, read at scrape time, served over HTTP."""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from k2.config import DegradationSettings, IcebergSettings, IngestSettings
from k2.dedup import Dedup
from k2.ingest.committer import Committer, FlushWork, StreamWork
from k2.ingest.load_control import LoadControl
from k2.ingest.metrics import (
    IngestCollector,
    PartitionFacts,
    TableFacts,
    file_sd_targets,
    start_metrics_server,
)
from k2.ingest.report import IngestReport
from k2.ingest.sequencing import PartitionSequencing
from k2.ingest.status import IngestStatus
from k2.lake.writer import CommitResult
from k2.live_buffer import BufferContent, LiveBuffer
from k2.observability import IngestMetrics
from k2.sequence_tracker import SequenceTracker

NOW = 1_800_000_000.0


def _arr(*seqs: int) -> np.ndarray:
    return np.array(seqs, dtype=np.int64)


@dataclass
class FakeCommitter:
    rows_committed: dict[str, int] = field(default_factory=dict)
    rows_set_aside: int = 0
    last_commit_at: dict[str, float] = field(default_factory=dict)
    table_facts: dict[str, TableFacts] = field(default_factory=dict)


class Ingest:
    """The parts an IngestApp hands its collector, with one partition of trades."""

    def __init__(self) -> None:
        self.report = IngestReport()
        self.committer = FakeCommitter()
        self.dlq = SimpleNamespace(sent=0, truncated=0, refused=0)
        self.control = LoadControl(DegradationSettings(), 1 << 30, "w-1", rss=lambda: 1 << 28)
        self.buffer = LiveBuffer()
        self.sequencing = PartitionSequencing(SequenceTracker(), Dedup())
        self.owned = True
        self.lag: int | None = 42
        self.metrics = IngestMetrics(process=False)
        self.collector = IngestCollector(
            writer="w-1",
            report=self.report,
            committer=self.committer,
            dlq=self.dlq,
            control=self.control,
            buffer=self.buffer,
            partitions=self.partitions,
            clock=lambda: NOW,
        )
        self.metrics.register(self.collector)

    def partitions(self) -> list[PartitionFacts]:
        if not self.owned:
            return []
        s = self.sequencing
        return [
            PartitionFacts(
                "market.trades", 3, "trades", self.lag, s.tracker.stats(), s.dedup.stats(), 7, NOW - 30.0, 1
            )
        ]

    def sequence(self, seqs: np.ndarray) -> None:
        self.sequencing.dedup.admit("ASX", "BHP", 1, seqs, 0)
        self.sequencing.tracker.observe("ASX", "BHP", 1, np.unique(seqs), 0)

    def scrape(self) -> dict[str, Any]:
        """Family name (as exposed: counters with ``_total``) -> {labels tuple: value}."""
        text = self.metrics.exposition().decode()
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out


@pytest.fixture
def ingest() -> Ingest:
    return Ingest()


def test_sequencing_counts_are_exported_per_table(ingest: Ingest) -> None:
    ingest.sequence(_arr(1, 2, 5))  # gap 3..4 opened
    ingest.sequence(_arr(2, 3))  # 2 a duplicate, 3 late: fills part of the gap
    got = ingest.scrape()
    trades = (("table", "trades"),)
    assert got["k2_ingest_gaps_opened_total"][trades] == 1
    assert got["k2_ingest_gap_seqs_filled_total"][trades] == 1
    assert got["k2_ingest_late_arrivals_total"][(("outcome", "filled_gap"), ("table", "trades"))] == 1
    assert got["k2_ingest_duplicates_total"][trades] == 1
    assert got["k2_ingest_gaps_open"][trades] == 1  # 4 still missing
    assert got["k2_ingest_gaps_deferred"][trades] == 1
    assert got["k2_ingest_consumer_lag_messages"][(("partition", "3"), ("topic", "market.trades"))] == 42
    assert got["k2_ingest_partitions_assigned"][(("topic", "market.trades"),)] == 1
    assert got["k2_ingest_backfill_pending_messages"][trades] == 7
    assert got["k2_ingest_backfill_pending_age_seconds"][()] == 30.0


def test_counters_survive_a_revoked_partition(ingest: Ingest) -> None:
    ingest.sequence(_arr(1, 2, 5, 5))
    before = ingest.scrape()
    ingest.collector.retire("trades", ingest.sequencing)
    ingest.owned = False  # the partition went to another process with its tracker and dedup
    after = ingest.scrape()
    for name in ("k2_ingest_gaps_opened_total", "k2_ingest_duplicates_total"):
        assert after[name] == before[name]
    assert "k2_ingest_gaps_open" not in after  # gauges only describe what this process owns
    assert "k2_ingest_consumer_lag_messages" not in after


def test_report_and_load_values_are_exported(ingest: Ingest) -> None:
    r = ingest.report
    r.shed, r.shed_by_class = 130, {"tier3": 80, "low": 20}  # 30 deferred by a backlog jump
    r.backfilled_by_class = {"tier3": 50}
    r.deferred_lost, r.level_changes, r.memory_pauses = 4, 3, 1
    ingest.control.observe(0, 0, time.monotonic())
    got = ingest.scrape()
    shed = got["k2_ingest_messages_shed_total"]
    assert shed == {(("tier", "tier3"),): 80, (("tier", "low"),): 20, (("tier", "backlog"),): 30}
    assert got["k2_ingest_messages_backfilled_total"] == {(("tier", "tier3"),): 50}
    assert got["k2_ingest_backfill_lost_total"][()] == 4
    assert got["k2_ingest_degradation_transitions_total"][()] == 3
    assert got["k2_ingest_degradation_level"][()] == 0
    assert got["k2_ingest_memory_ratio"][()] == 0.25
    assert got["k2_ingest_memory_budget_bytes"][()] == 1 << 30
    assert got["k2_ingest_memory_pauses_total"][()] == 1
    assert got["k2_ingest_info"] == {(("writer", "w-1"),): 1}


def test_committer_and_buffer_values_are_exported(ingest: Ingest) -> None:
    c = ingest.committer
    c.rows_committed = {"trades": 1000, "quotes": 5}
    c.rows_set_aside = 2
    c.last_commit_at = {"trades": NOW - 12.0, "quotes": NOW - 3.0}
    c.table_facts = {"trades": TableFacts(snapshots=6, data_files=11, data_bytes=4096, rows=1000)}
    ingest.dlq.sent, ingest.dlq.truncated = 9, 1
    ingest.buffer.append("trades", pa.table({"x": [1, 2, 3]}), time.monotonic())
    got = ingest.scrape()
    assert got["k2_ingest_rows_landed_total"] == {(("table", "trades"),): 1000, (("table", "quotes"),): 5}
    assert got["k2_ingest_rows_set_aside_total"][()] == 2
    assert got["k2_ingest_time_since_last_commit_seconds"][()] == 3.0
    assert got["k2_ingest_last_commit_timestamp_seconds"][(("table", "trades"),)] == NOW - 12.0
    assert got["k2_iceberg_snapshots"][(("table", "trades"),)] == 6
    assert got["k2_iceberg_data_files"][(("table", "trades"),)] == 11
    assert got["k2_iceberg_data_bytes"][(("table", "trades"),)] == 4096
    assert got["k2_ingest_dlq_sent_total"][()] == 9
    assert got["k2_ingest_dlq_truncated_total"][()] == 1
    assert got["k2_ingest_live_buffer_rows"][()] == 3
    assert got["k2_ingest_live_buffer_bytes"][()] > 0


def test_before_any_commit_the_wait_counts_from_the_start(ingest: Ingest) -> None:
    assert ingest.scrape()["k2_ingest_time_since_last_commit_seconds"][()] == 0.0


def test_types_follow_what_the_value_does(ingest: Ingest) -> None:
    text = ingest.metrics.exposition().decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["k2_ingest_rows_landed"] == "counter"  # the parser drops _total from the family
    assert types["k2_ingest_live_buffer_rows"] == "gauge"
    assert types["k2_ingest_freshness_seconds"] == "histogram"
    assert types["k2_ingest_commit_duration_seconds"] == "histogram"


def test_batch_observations_land_in_histograms_and_counters(ingest: Ingest) -> None:
    m = ingest.metrics
    m.observe_freshness([(NOW, "tier1", 0.004), (NOW, "tier1", 0.2), (NOW, "low", 40.0)])
    m.dead_lettered("trades", [("validate", "price_nonpositive")] * 3 + [("decode", "malformed")])
    m.consumed.labels("trades").inc(500)
    got = ingest.scrape()
    assert got["k2_ingest_freshness_seconds_count"][(("tier", "tier1"),)] == 2
    assert got["k2_ingest_freshness_seconds_bucket"][(("le", "0.005"), ("tier", "tier1"))] == 1
    assert got["k2_ingest_freshness_seconds_count"][(("tier", "low"),)] == 1
    dead = got["k2_ingest_dead_letters_total"]
    assert dead[(("reason", "price_nonpositive"), ("stage", "validate"), ("table", "trades"))] == 3
    assert dead[(("reason", "malformed"), ("stage", "decode"), ("table", "trades"))] == 1
    assert got["k2_ingest_messages_consumed_total"][(("table", "trades"),)] == 500


# -- the committer observes each commit ----------------------------------------------------------


class FakeTable:
    def __init__(self) -> None:
        self.metadata = SimpleNamespace(snapshots=[1, 2, 3])

    def current_snapshot(self) -> Any:
        summary = {"total-data-files": "4", "total-files-size": "2048", "total-records": "10"}
        return SimpleNamespace(summary=summary)


class FakeWriter:
    name = "trades"

    def __init__(self) -> None:
        self.table = FakeTable()

    def commit(self, rows: pa.Table, offsets: Any, expected: Any, deferred: Any) -> CommitResult:
        return CommitResult("trades", 7, rows.num_rows, "c1", 0.3, attempts=2)


def test_each_commit_is_observed_with_its_duration_retries_and_table_size() -> None:
    metrics = IngestMetrics(process=False)
    work = FlushWork(
        BufferContent(), [StreamWork("trades", "market.trades", offsets={0: 10}, expected={0: 0})]
    )
    committer = Committer(
        LiveBuffer(),
        {"trades": FakeWriter()},  # type: ignore[dict-item]
        None,  # type: ignore[arg-type]
        SimpleNamespace(flush=lambda: None),  # type: ignore[arg-type]
        lambda: work,
        lambda sw: None,
        IngestSettings(),
        IcebergSettings(maintenance_every_commits=1000),
        lambda *a: None,
        metrics,
    )
    committer.flush_now()
    text = metrics.exposition().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("k2_ingest_commit_duration_seconds_count", (("table", "trades"),))] == 1
    assert samples[("k2_ingest_commit_duration_seconds_sum", (("table", "trades"),))] == 0.3
    assert samples[("k2_ingest_commit_rows_count", (("table", "trades"),))] == 1
    assert samples[("k2_ingest_commit_retries_total", (("table", "trades"),))] == 1
    assert committer.table_facts["trades"] == TableFacts(snapshots=3, data_files=4, data_bytes=2048, rows=10)
    assert "trades" in committer.last_commit_at


# -- the HTTP endpoint -----------------------------------------------------------------------


def test_metrics_are_served_over_http_on_a_free_port(ingest: Ingest) -> None:
    ingest.buffer.append("trades", pa.table({"x": [1, 2]}), time.monotonic())
    server = start_metrics_server("127.0.0.1", 0, ingest.metrics.registry)
    try:
        assert server.endpoint == f"http://127.0.0.1:{server.port}/metrics"
        response = httpx.get(server.endpoint, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        assert families["k2_ingest_live_buffer_rows"].samples[0].value == 2
    finally:
        server.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.endpoint, timeout=1)


def test_a_fixed_port_in_use_falls_back_to_a_free_one_and_says_so(ingest: Ingest) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    errors: list[BaseException] = []
    try:
        server = start_metrics_server("127.0.0.1", port, ingest.metrics.registry, on_error=errors.append)
        try:
            assert server.port != port
            assert httpx.get(server.endpoint, timeout=5).status_code == 200
        finally:
            server.stop()
    finally:
        taken.close()
    assert len(errors) == 1 and getattr(errors[0], "errno", None) == errno.EADDRINUSE


def _status(writer: str, endpoint: str | None, updated_at: float) -> IngestStatus:
    return IngestStatus(
        writer, 1, updated_at, 0, "NORMAL", None, 0, 0.1, 1, 0, 0, False, 0, None, 0, 0, 0,
        metrics_endpoint=endpoint,
    )  # fmt: skip


def test_file_sd_targets_name_every_live_process() -> None:
    statuses = [
        _status("host-1", "http://10.0.0.5:9101/metrics", NOW - 1),
        _status("host-0", "http://10.0.0.5:9100/metrics", NOW - 2),
        _status("crashed", "http://10.0.0.5:9102/metrics", NOW - 600),
        _status("old-version", None, NOW),
    ]
    assert file_sd_targets(statuses, NOW, stale_after_s=15) == [
        {"targets": ["10.0.0.5:9100"], "labels": {"writer": "host-0", "__metrics_path__": "/metrics"}},
        {"targets": ["10.0.0.5:9101"], "labels": {"writer": "host-1", "__metrics_path__": "/metrics"}},
    ]
