"""``k2 ingest --processes 3`` on a fresh warehouse: the children race to create the tables, split
the partitions, commit concurrently to the same tables, and together land everything once; the
parent's merged report adds up."""

from __future__ import annotations

import json
from pathlib import Path

from k2.config import Settings
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.ingest.pool import wait_for_members
from k2.lake import TABLE_FOR_STREAM, open_catalog
from lake_probe import landed_identities, start_ingest


def test_process_pool_lands_everything_once(k2_settings: Settings, tmp_path: Path) -> None:
    ingest = k2_settings.ingest.model_copy(update={"flush_rows": 20_000, "flush_seconds": 0.5})
    settings = k2_settings.model_copy(update={"ingest": ingest})
    report_path = tmp_path / "pool.json"
    proc = start_ingest(
        settings,
        tmp_path / "pool.log",
        *("--processes", "3", "--writer-id", "pool", "--exit-when-idle", "8", "--report", str(report_path)),
    )
    wait_for_members(settings.kafka, 3)  # before the idle clock (8 s from assignment) runs out
    config = SimulatorConfig(
        seed=33, tier1=6, tier2=12, tier3=24, messages=120_000, rate=0, duplicate_rate=0.01, poison_rate=0.001
    )
    feed = simulate(settings, config, progress=False)
    assert proc.wait(timeout=300) == 0, (tmp_path / "pool.log").read_text()[-3000:]

    landed = landed_identities(settings)
    assert len(landed) == len(set(landed)), "a message landed twice"
    assert set(landed) == feed.valid_keys()

    catalog = open_catalog(settings.iceberg)
    writers: set[str] = set()
    for name in TABLE_FOR_STREAM.values():
        table = catalog.load_table((settings.iceberg.namespace, name))
        writers |= {s.summary["k2.writer-id"] for s in table.metadata.snapshots if s.summary is not None}
    assert writers == {"pool-0", "pool-1", "pool-2"}

    merged = json.loads(report_path.read_text())
    assert sum(merged["landed"].values()) == len(feed.valid_keys())
    assert sum(merged["rejected"].values()) == len(feed.poison)
    assert merged["exit_reason"] == "idle"
