"""Degradation, shedding and backfill through the real broker and real Iceberg.

A backlog built while ingest is down drives the level up; the simulator's tier-3 symbols and
reference data are shed (deferred) while tier-1 keeps landing, the level recovers, the backfill
lands what was shed, and in the end the tables hold exactly the produced input, with no false
gap. The thresholds are scaled down so a backlog of tens of thousands of messages is "deep".
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from k2.config import DegradationSettings, IngestSettings, Settings
from k2.feeds.report import FeedReport
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.ingest import IngestApp
from k2.ingest.report import IngestReport
from k2.lake import open_catalog, read_offsets
from lake_probe import gap_ranges, landed_identities, start_ingest

BACKLOG = 60_000


def _settings(base: Settings, defer_backlog: bool, **ingest: object) -> Settings:
    degradation = DegradationSettings(
        lag_thresholds=[5_000, 10_000, 20_000, 10**9],
        cooldown_s=1.0,
        defer_backlog=defer_backlog,
    )
    return base.model_copy(
        update={
            "degradation": degradation,
            "ingest": IngestSettings(
                **{
                    "consume_batch": 5_000,
                    "flush_seconds": 1.0,
                    "status_dir": base.ingest.status_dir,
                    **ingest,
                }
            ),
        }
    )


def _backlog(settings: Settings, messages: int = BACKLOG, seed: int = 3) -> FeedReport:
    return simulate(settings, SimulatorConfig(seed=seed, messages=messages, rate=0), progress=False)


def _assert_exactly_the_input(settings: Settings, report: FeedReport) -> None:
    landed = landed_identities(settings)
    assert len(landed) == len(set(landed)), "a message identity landed twice"
    assert set(landed) == report.valid_keys()
    assert gap_ranges(settings, "open") == set(), "a false gap is open"
    assert gap_ranges(settings, "deferred") == set(), "a deferred gap was never filled"
    assert gap_ranges(settings, "lost") == set()


def _ledger_empty(settings: Settings) -> bool:
    catalog = open_catalog(settings.iceberg)
    for name in ("trades", "quotes", "reference_data"):
        table = catalog.load_table((settings.iceberg.namespace, name))
        if read_offsets(table).deferred.partitions():
            return False
    return True


def test_a_backlog_sheds_tier3_and_reference_then_backfills_to_exactly_the_input(
    k2_settings: Settings,
) -> None:
    settings = _settings(k2_settings, defer_backlog=False)
    feed = _backlog(settings)
    result = IngestApp(settings).run(exit_when_idle=3.0, max_seconds=240)

    assert result.exit_reason == "idle"
    assert result.max_level >= 3, "the backlog should have reached AGGRESSIVE"
    assert result.shed > 0 and result.backfilled == result.shed
    assert set(result.shed_by_class) <= {"low", "tier3"}, "only reference data and tier 3 are shed"
    assert result.shed_by_class == result.backfilled_by_class
    fresh_tier1 = [s for _, c, s in result.freshness if c == "tier1"]
    assert fresh_tier1, "tier-1 rows kept landing while others were shed"
    assert result.deferred_lost == 0
    _assert_exactly_the_input(settings, feed)
    assert _ledger_empty(settings)


def test_a_deep_backlog_is_deferred_whole_and_backfilled_to_exactly_the_input(k2_settings: Settings) -> None:
    settings = _settings(k2_settings, defer_backlog=True)
    feed = _backlog(settings)
    result = IngestApp(settings).run(exit_when_idle=3.0, max_seconds=240)

    assert result.exit_reason == "idle"
    assert result.shed >= BACKLOG // 2, "most of the backlog should have been jumped over"
    assert result.backfilled > 0
    _assert_exactly_the_input(settings, feed)
    assert _ledger_empty(settings)


def test_kill_9_while_shedding_and_backfilling_still_lands_everything_once(
    k2_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(k2_settings, defer_backlog=False)
    feed = _backlog(settings, messages=80_000, seed=5)
    log = tmp_path / "ingest.log"
    for delay in (4.0, 7.0, 10.0):  # mid-shedding, then (later runs) mid-backfill
        proc = start_ingest(settings, log)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    report_file = tmp_path / "report.json"
    proc = start_ingest(settings, log, "--exit-when-idle", "3", "--report", str(report_file))
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    _assert_exactly_the_input(settings, feed)
    assert _ledger_empty(settings)


def test_a_deferred_range_deleted_by_retention_is_reported_lost(k2_settings: Settings) -> None:
    """Shed, then delete the records before the backfill (as retention would): counted, logged,
    and the gaps they leave are lost, never silently open."""
    settings = _settings(k2_settings, defer_backlog=True)
    _backlog(settings, messages=40_000)
    # A run long enough to shed but stopped before the level allows a backfill (cooldowns).
    slow = settings.model_copy(
        update={"degradation": settings.degradation.model_copy(update={"cooldown_s": 3600.0})}
    )
    first = IngestApp(slow).run(max_seconds=15)
    assert first.shed > 0
    catalog = open_catalog(settings.iceberg)
    pending = {}
    for name in ("trades", "quotes", "reference_data"):
        ledger = read_offsets(catalog.load_table((settings.iceberg.namespace, name))).deferred
        for topic, p in ledger.partitions():
            pending[(topic, p)] = ledger.ranges(topic, p)[-1].last + 1
    assert pending, "the jump should have left deferred ranges"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    futures = admin.delete_records([TopicPartition(t, p, o) for (t, p), o in pending.items()])
    for f in futures.values():
        f.result(timeout=30)
    result: IngestReport = IngestApp(settings).run(exit_when_idle=3.0, max_seconds=120)
    assert result.deferred_lost > 0
    assert _ledger_empty(settings)
    assert gap_ranges(settings, "open") == set()
    assert gap_ranges(settings, "deferred") == set()


def test_a_tiny_memory_budget_reaches_circuit_break_and_pauses_instead_of_growing(
    k2_settings: Settings,
) -> None:
    """In this process (so RSS is measured where it grows): commits slowed to 3 s and a budget of
    which today's RSS is already 88 %. The first batches push past the CIRCUIT_BREAK bound; from
    then on consumption pauses whenever the buffer holds rows, so RSS stays nearly flat instead
    of growing with the 300k-message backlog, and a backfill afterwards still lands exactly the
    input."""
    import gc
    import threading

    import psutil

    settings = _settings(k2_settings, defer_backlog=False, debug_commit_delay_s=3.0)
    feed = _backlog(settings, messages=300_000, seed=9)
    gc.collect()
    me = psutil.Process()
    # This process's RSS depends on what ran before it, so the bounds sit just above it: today's
    # RSS is 88 % of the budget, CIRCUIT_BREAK at 93 % (a few tens of MB of growth).
    budget = int(me.memory_info().rss / 0.88)
    settings = settings.model_copy(
        update={
            "degradation": settings.degradation.model_copy(
                update={
                    "memory_budget_bytes": budget,
                    "memory_thresholds": [0.80, 0.85, 0.90, 0.93],
                    "lag_thresholds": [10**7, 10**8, 10**9, 10**10],
                }
            )
        }
    )
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            samples.append((time.time(), me.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = IngestApp(settings).run(max_seconds=40)
    finally:
        done.set()
        sampler.join()
    assert result.max_level == 4, "memory should have driven CIRCUIT_BREAK"
    assert result.memory_pauses > 0
    reached = min(t for t, level in result.level_timeline if level == 4)
    settled = [rss for t, rss in samples if t >= reached + 2.0]
    assert settled, "the run should go on well after CIRCUIT_BREAK"
    # Not perfectly flat: each slow commit allocates a little (catalog metadata, allocator
    # fragmentation), about 1-2 MB/s here; reading on would add the whole backlog.
    growth = max(settled) - settled[0]
    assert growth < 0.2 * budget, f"RSS grew {growth / 2**20:.0f} MiB after CIRCUIT_BREAK"
    assert result.consumed < 300_000 * 0.9, "paused consumption should have left most of the backlog"
    # Then let it finish: no budget, backfill whatever was shed.
    relaxed = settings.model_copy(
        update={
            "degradation": DegradationSettings(),
            "ingest": IngestSettings(status_dir=settings.ingest.status_dir),
        }
    )
    IngestApp(relaxed, backfill_now=True).run(exit_when_idle=3.0, max_seconds=240)
    _assert_exactly_the_input(relaxed, feed)


def test_two_processes_hand_their_ledgers_over_with_their_partitions(
    k2_settings: Settings, tmp_path: Path
) -> None:
    """Two ingest processes shed, a rebalance moves partitions (and their pending ranges) between
    them, each exits when its part is done and the other takes over: exactly the input lands."""
    settings = _settings(k2_settings, defer_backlog=False)
    feed = _backlog(settings, messages=80_000, seed=13)
    reports = [tmp_path / "a.json", tmp_path / "b.json"]
    a = start_ingest(settings, tmp_path / "a.log", "--exit-when-idle", "5", "--report", str(reports[0]))
    time.sleep(4.0)  # a is shedding by now
    b = start_ingest(settings, tmp_path / "b.log", "--exit-when-idle", "5", "--report", str(reports[1]))
    assert a.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()[-3000:]
    assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()[-3000:]
    done = [IngestReport.from_json(r.read_text()) for r in reports]
    assert sum(r.shed for r in done) > 0 and sum(r.backfilled for r in done) > 0
    _assert_exactly_the_input(settings, feed)
    assert _ledger_empty(settings)
