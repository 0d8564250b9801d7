"""kill -9 the ingest process at random moments while the simulator produces; after the final
restart every valid message has landed exactly once, and restarts caused no false gaps."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pyiceberg.exceptions import NoSuchTableError

from k2.config import Settings
from k2.feeds.report import FeedReport
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.lake import TABLE_FOR_STREAM, open_catalog
from lake_probe import gap_ranges, landed_identities, start_ingest

KILLS = 6  # each round: start, wait for a commit, kill -9 within 1.5 s; the feed outlasts them


@pytest.fixture
def crash_settings(k2_settings: Settings) -> Settings:
    # Small, frequent commits so kills land before, during and after commits; a short session
    # timeout so the group notices a killed member quickly and the next process gets its partitions.
    ingest = k2_settings.ingest.model_copy(update={"flush_rows": 4000, "flush_seconds": 0.5})
    kafka = k2_settings.kafka.model_copy(
        update={"client_properties": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}}
    )
    return k2_settings.model_copy(update={"ingest": ingest, "kafka": kafka})


def _snapshots(settings: Settings) -> int:
    catalog = open_catalog(settings.iceberg)
    try:
        return sum(
            len(catalog.load_table((settings.iceberg.namespace, t)).metadata.snapshots)
            for t in TABLE_FOR_STREAM.values()
        )
    except NoSuchTableError:  # the first ingest process has not created them yet
        return 0


def _wait_for_commit(settings: Settings, before: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Block until this ingest process has committed something (so the kill hits live work)."""
    deadline = time.monotonic() + 90
    while _snapshots(settings) <= before:
        assert proc.poll() is None, f"ingest died: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"ingest committed nothing in time: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_kill_9_during_ingest_loses_and_duplicates_nothing(crash_settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "ingest.log"
    rng = random.Random(20140310)
    config = SimulatorConfig(
        seed=5, tier1=5, tier2=10, tier3=20, messages=400_000, rate=4000, gap_rate=0.002, duplicate_rate=0.005
    )
    produced: list[FeedReport] = []
    feed = threading.Thread(target=lambda: produced.append(simulate(crash_settings, config, progress=False)))
    feed.start()
    for _ in range(KILLS):
        proc = start_ingest(crash_settings, log)
        _wait_for_commit(crash_settings, _snapshots(crash_settings), proc, log)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere in consume / buffer / commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    feed.join(timeout=300)
    assert produced, "the simulator did not finish"
    final = start_ingest(crash_settings, log, "--exit-when-idle", "3", "--max-seconds", "300")
    assert final.wait(timeout=400) == 0, log.read_text()[-3000:]

    report = produced[0]
    landed = landed_identities(crash_settings)
    assert len(landed) == len(set(landed)), "a message landed twice"
    assert set(landed) == report.valid_keys()

    open_gaps = gap_ranges(crash_settings, "open")
    assert open_gaps == {
        (g.table, g.exchange, g.symbol, g.session, g.first_seq, g.last_seq) for g in report.gaps
    }
