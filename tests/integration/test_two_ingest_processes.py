"""Two ingest processes in one consumer group share the partitions (and rebalance as the second
joins, and again as the first leaves); together they land every message exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from k2.config import Settings, settings_env
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.lake import TABLE_FOR_STREAM, open_catalog, read_offsets


def _ingest(settings: Settings, log: Path, writer: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "K2_LOG__FORMAT": "json"}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "ingest", "--writer-id", writer, "--exit-when-idle", "4"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def test_two_processes_in_one_group_land_everything_once(k2_settings: Settings, tmp_path: Path) -> None:
    ingest = k2_settings.ingest.model_copy(update={"flush_rows": 5000, "flush_seconds": 0.5})
    settings = k2_settings.model_copy(update={"ingest": ingest})
    config = SimulatorConfig(
        seed=21, tier1=6, tier2=12, tier3=24, messages=150_000, rate=15_000, duplicate_rate=0.01
    )
    first = _ingest(settings, tmp_path / "a.log", "writer-a")
    time.sleep(3)
    second = _ingest(settings, tmp_path / "b.log", "writer-b")
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
