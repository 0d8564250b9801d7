"""Two ingest processes in one consumer group share the partitions (and rebalance as the second
joins, and again as the first leaves); together they land every message exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from k2.config import Settings
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.lake import TABLE_FOR_STREAM, open_catalog, read_offsets
from lake_probe import start_ingest


def test_two_processes_in_one_group_land_everything_once(k2_settings: Settings, tmp_path: Path) -> None:
    ingest = k2_settings.ingest.model_copy(update={"flush_rows": 5000, "flush_seconds": 0.5})
    settings = k2_settings.model_copy(update={"ingest": ingest})
    config = SimulatorConfig(
        seed=21, tier1=6, tier2=12, tier3=24, messages=150_000, rate=15_000, duplicate_rate=0.01
    )
    first = start_ingest(settings, tmp_path / "a.log", "--writer-id", "writer-a", "--exit-when-idle", "4")
    time.sleep(3)
    second = start_ingest(settings, tmp_path / "b.log", "--writer-id", "writer-b", "--exit-when-idle", "4")
    report = simulate(settings, config, progress=False)
    for proc, log in ((first, "a.log"), (second, "b.log")):
        assert proc.wait(timeout=300) == 0, (tmp_path / log).read_text()[-3000:]

    catalog = open_catalog(settings.iceberg)
    landed: list[tuple[str, str, str, int, int]] = []
    writers: set[str] = set()
    for stream, name in TABLE_FOR_STREAM.items():
        table = catalog.load_table((settings.iceberg.namespace, name))
        rows = table.scan(selected_fields=("exchange", "symbol", "session", "seq")).to_arrow().to_pylist()
        landed += [(stream, r["exchange"], r["symbol"], r["session"], r["seq"]) for r in rows]
        writers |= {s.summary["k2.writer-id"] for s in table.metadata.snapshots if s.summary is not None}
        assert read_offsets(table).snapshot_id is not None
    assert len(landed) == len(set(landed)), "a message landed twice"
    assert set(landed) == report.valid_keys()
    assert {"writer-a", "writer-b"} <= writers, "both processes should have committed"
