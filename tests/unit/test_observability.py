"""Every k2 metric follows Prometheus' conventions and is documented; process metrics are exported."""

from __future__ import annotations

import gc
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from k2.config import DegradationSettings
from k2.dedup import Dedup
from k2.ingest.load_control import LoadControl
from k2.ingest.metrics import IngestCollector, PartitionFacts, TableFacts
from k2.ingest.report import IngestReport
from k2.live_buffer import LiveBuffer
from k2.observability import INGEST_SCRAPED, IngestMetrics, Metrics
from k2.sequence_tracker import SequenceTracker

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
_STANDARD = ("process_", "python_")  # prometheus_client's ProcessCollector, GCCollector, platform
_UNITS = {"duration": "_seconds", "age": "_seconds", "pause": "_seconds", "since": "_seconds"}


def _every_family() -> dict[str, tuple[str, list[Sample]]]:
    """name -> (type, samples) over the API's and a populated ingest process's registries."""
    tracker = SequenceTracker()
    tracker.observe("ASX", "BHP", 1, np.array([1, 2, 5], dtype=np.int64), 0)
    facts = PartitionFacts("market.trades", 0, "trades", 5, tracker.stats(), Dedup().stats(), 3, 0.0, 1)
    report = IngestReport(shed=3, shed_by_class={"tier3": 3}, backfilled_by_class={"tier3": 1})
    committer = SimpleNamespace(
        rows_committed={"trades": 1},
        rows_set_aside=0,
        last_commit_at={"trades": 1.0},
        table_facts={"trades": TableFacts(1, 1, 1, 1)},
    )
    ingest = IngestMetrics(process=False)
    ingest.register(
        IngestCollector(
            writer="w",
            report=report,
            committer=committer,
            dlq=SimpleNamespace(sent=0, truncated=0, refused=0),
            control=LoadControl(DegradationSettings(), 1 << 30, "w", rss=lambda: 1),
            buffer=LiveBuffer(),
            partitions=lambda: [facts],
        )
    )
    ingest.observe_freshness([(0.0, "tier1", 0.01)])
    ingest.dead_lettered("trades", [("decode", "malformed")])
    for m in (ingest.consumed, ingest.commit_duration, ingest.commit_rows, ingest.commit_retries):
        m.labels("trades")
    ingest.commit_failures.labels("trades", "storage")
    ingest.maintenance_runs.labels("trades", "expire_snapshots")
    ingest.snapshots_expired.labels("trades")
    ingest.error("status_write", OSError())
    api = Metrics()
    api.api_requests.labels("/v1/trades", "200").inc()
    api.api_request_duration.labels("/v1/trades").observe(0.1)
    api.api_sql_rejected.labels("not_select").inc()
    api.api_errors.labels("RuntimeError").inc()
    everything = IngestMetrics()  # with the process collectors
    out: dict[str, tuple[str, list[Sample]]] = {}
    for text in (ingest.exposition(), api.exposition(), everything.exposition()):
        for fam in text_string_to_metric_families(text.decode()):
            if not fam.name.endswith("_created"):  # prometheus_client's creation timestamps
                out[fam.name] = (fam.type, list(fam.samples))
    return out


@pytest.fixture(scope="module")
def families() -> dict[str, tuple[str, list[Sample]]]:
    return _every_family()


def test_names_carry_the_k2_prefix(families: dict[str, tuple[str, list[Sample]]]) -> None:
    assert [n for n in families if not n.startswith(("k2_", *_STANDARD))] == []


def test_counters_end_in_total(families: dict[str, tuple[str, list[Sample]]]) -> None:
    for name, (kind, samples) in families.items():
        if kind == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in samples), name
        else:
            assert not name.endswith("_total"), name


def test_times_and_sizes_are_in_base_units(families: dict[str, tuple[str, list[Sample]]]) -> None:
    for name in families:
        if name.startswith(_STANDARD):
            continue
        assert not re.search(r"_(ms|us|millis|kb|mb|minutes)(_|$)", name), name
        for word, unit in _UNITS.items():
            if re.search(rf"_{word}(_|$)", name) and "timestamp" not in name:
                assert name.endswith(unit), name


def test_no_label_names_a_symbol(families: dict[str, tuple[str, list[Sample]]]) -> None:
    labels = {k for _, samples in families.values() for s in samples for k in s.labels}
    assert not labels & {"symbol", "sym", "key"}, labels


def test_latencies_are_histograms(families: dict[str, tuple[str, list[Sample]]]) -> None:
    for name in ("k2_api_request_duration_seconds", "k2_ingest_commit_duration_seconds",
                 "k2_ingest_freshness_seconds", "k2_gc_pause_seconds"):  # fmt: skip
        assert families[name][0] == "histogram", name


def test_process_memory_cpu_and_gc_are_exported(families: dict[str, tuple[str, list[Sample]]]) -> None:
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "python_gc_collections"):
        assert name in families, name


def test_every_metric_is_documented(families: dict[str, tuple[str, list[Sample]]]) -> None:
    doc = DOC.read_text()
    k2_names = {n for n in families if n.startswith("k2_")}
    k2_names |= {s.name for s in INGEST_SCRAPED.values()}
    missing = sorted(n for n in k2_names if f"`{n}" not in doc)
    assert missing == [], "add to docs/observability.md"


def test_gc_pauses_are_timed_and_the_hook_goes_with_its_registry() -> None:
    registry = CollectorRegistry()
    before = len(gc.callbacks)
    IngestMetrics(registry, process=True)
    assert len(gc.callbacks) == before + 1
    gc.collect()
    count = registry.get_sample_value("k2_gc_pause_seconds_count", {"generation": "2"})
    assert count is not None and count >= 1
    del registry
    gc.collect()
    assert len(gc.callbacks) == before
