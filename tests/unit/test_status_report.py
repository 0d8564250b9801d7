"""``k2 status``: which processes are alive, what they report, and the backfill pending in Iceberg.

Statuses come from real files written with ``write_status``; ledgers are built in memory, and
the CLI test lands one in a real SqlCatalog to show pending backfill with no process running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from k2 import cli
from k2.config import IcebergSettings
from k2.deferred_ledger import DeferredLedger
from k2.ingest.status import IngestStatus, read_statuses, write_status
from k2.lake import TableWriter, ensure_tables, open_catalog
from k2.lake.tables import market_arrow_schema
from k2.status_report import StatusReport, build_report, pid_exists

NOW = 1_800_000_000.0


def status(writer: str, pid: int, updated_at: float, **fields: object) -> IngestStatus:
    values: dict[str, object] = dict(
        writer=writer,
        pid=pid,
        updated_at=updated_at,
        level=0,
        level_name="NORMAL",
        level_since=None,
        lag=1_234,
        memory=0.42,
        memory_budget_bytes=8 * 2**30,
        buffer_rows=50_000,
        buffer_bytes=12 * 2**20,
        paused=False,
        pending_backfill=0,
        oldest_pending_since=None,
        shed=0,
        backfilled=0,
        deferred_lost=0,
        partitions=["trades[0]", "quotes[0]"],
    )
    values.update(fields)
    return IngestStatus(**values)  # type: ignore[arg-type]


def ledger() -> DeferredLedger:
    out = DeferredLedger()
    out.add("trades", 0, 100, 199, {"tier3"}, 40, since=NOW - 120)
    out.add("trades", 0, 500, 599, {"tier2", "tier3"}, 10, since=NOW - 30)
    out.add("trades", 3, 10, 19, {"tier3"}, 5, since=NOW - 600)
    return out


def report_from(tmp_path: Path, statuses: list[IngestStatus], running: set[int]) -> StatusReport:
    for s in statuses:
        write_status(tmp_path, s)
    return build_report(read_statuses(tmp_path), {}, now=NOW, pid_alive=running.__contains__)


# ---------------------------------------------------------------------------- processes


def test_a_process_is_alive_only_with_a_running_pid_and_a_fresh_file(tmp_path: Path) -> None:
    report = report_from(
        tmp_path,
        [
            status("fresh", 101, NOW - 1.5),
            status("hung", 102, NOW - 5.5),  # pid runs, file not rewritten for 5 writes
            status("gone", 103, NOW - 1.0),  # file fresh, process already gone
        ],
        running={101, 102},
    )

    states = {p.writer: p.state for p in report.processes}
    assert states == {"fresh": "alive", "hung": "stalled", "gone": "exited"}
    assert report.alive == 1
    assert report.processes[0].writer == "fresh"  # alive first


def test_a_file_written_exactly_five_seconds_ago_is_still_fresh(tmp_path: Path) -> None:
    report = report_from(tmp_path, [status("w", 7, NOW - 5.0)], running={7})

    assert report.processes[0].alive


def test_process_row_carries_level_memory_buffer_and_pending_backfill(tmp_path: Path) -> None:
    report = report_from(
        tmp_path,
        [
            status(
                "w1",
                7,
                NOW - 1,
                level=3,
                level_name="AGGRESSIVE",
                lag=2_000_000,
                paused=True,
                pending_backfill=5_000,
                oldest_pending_since=NOW - 90,
                shed=6_000,
                backfilled=1_000,
                deferred_lost=2,
            )
        ],
        running={7},
    )

    (p,) = report.processes
    assert (p.level, p.lag, p.paused) == ("AGGRESSIVE", 2_000_000, True)
    assert p.memory == pytest.approx(0.42)
    assert (p.buffer_rows, p.buffer_bytes) == (50_000, 12 * 2**20)
    assert (p.pending_backfill, p.oldest_pending_age_s) == (5_000, 90.0)
    assert (p.shed, p.backfilled, p.deferred_lost) == (6_000, 1_000, 2)


def test_pid_exists_sees_this_process_and_not_a_finished_one() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    finished = int(child.stdout)

    assert pid_exists(os.getpid())
    assert not pid_exists(finished)
    assert not pid_exists(0)


# ---------------------------------------------------------------------------- ledgers


def test_ledger_summary_gives_pending_messages_oldest_age_and_partitions() -> None:
    report = build_report([], {"trades": ledger(), "quotes": DeferredLedger()}, now=NOW, pid_alive=bool)

    trades, quotes = report.ledgers
    assert (trades.table, trades.messages, trades.oldest_pending_age_s) == ("trades", 55, 600.0)
    assert trades.ranges == 3
    assert trades.classes == ["tier2", "tier3"]
    p0, p3 = trades.partitions
    assert (p0.topic, p0.partition, p0.ranges, p0.messages) == ("trades", 0, 2, 50)
    assert (p0.first_offset, p0.last_offset, p0.oldest_pending_age_s) == (100, 599, 120.0)
    assert (p3.partition, p3.messages, p3.classes) == (3, 5, ["tier3"])
    assert (quotes.messages, quotes.oldest_pending_since, quotes.partitions) == (0, None, [])


# ---------------------------------------------------------------------------- output


def test_json_document_shape(tmp_path: Path) -> None:
    write_status(tmp_path, status("w1", 7, NOW - 1, pending_backfill=3, oldest_pending_since=NOW - 60))
    report = build_report(read_statuses(tmp_path), {"trades": ledger()}, now=NOW, pid_alive={7}.__contains__)

    doc = json.loads(json.dumps(report.to_dict()))

    assert set(doc) == {"now", "fresh_s", "alive", "processes", "deferred", "lake_error"}
    assert doc["alive"] == 1
    (proc,) = doc["processes"]
    assert proc["writer"] == "w1" and proc["alive"] is True and proc["state"] == "alive"
    assert proc["oldest_pending_age_s"] == 60.0
    assert proc["partitions"] == ["trades[0]", "quotes[0]"]
    trades = doc["deferred"]["trades"]
    assert trades["messages"] == 55 and trades["oldest_pending_age_s"] == 600.0
    assert [(p["partition"], p["messages"]) for p in trades["partitions"]] == [(0, 50), (3, 5)]


def test_tables_render_every_process_and_the_pending_backfill(tmp_path: Path) -> None:
    write_status(tmp_path, status("w1", 7, NOW - 1, level_name="GRACEFUL"))
    write_status(tmp_path, status("w2", 8, NOW - 3600))
    report = build_report(read_statuses(tmp_path), {"trades": ledger()}, now=NOW, pid_alive={7}.__contains__)
    console = Console(record=True, width=250)

    console.print(report.rich())
    text = console.export_text()

    assert "ingest processes (1 alive)" in text
    lines = [line.split() for line in text.splitlines()]
    # Two lines a process: writer, state, level, memory...; then pid, (updated), lag, buffer...
    assert ["w1", "alive", "GRACEFUL", "42%", "of", "8.0", "GiB", "0", "0"] in lines
    assert ["7", "(1.0s)", "1,234", "50,000", "rows,", "12", "MiB", "0,", "0", "lost"] in lines
    assert ["w2", "exited", "NORMAL", "42%", "of", "8.0", "GiB", "0", "0"] in lines
    assert ["8", "(1h00m)", "1,234", "50,000", "rows,", "12", "MiB", "0,", "0", "lost"] in lines
    trades_row = next(line for line in text.splitlines() if line.strip().startswith("trades"))
    assert trades_row.split() == ["trades", "55", "10m00s", "2", "3", "tier2,", "tier3"]


def test_no_status_files_says_so() -> None:
    console = Console(record=True, width=120)

    console.print(build_report([], {}, now=NOW, pid_alive=bool).rich())

    assert "ingest processes: none (no status files)" in console.export_text()


def test_unreadable_lake_is_reported_not_fatal() -> None:
    report = build_report([], {}, now=NOW, pid_alive=bool, lake_error="OperationalError: locked")
    console = Console(record=True, width=200)

    console.print(report.rich())

    assert report.to_dict()["lake_error"] == "OperationalError: locked"
    assert "pending backfill in Iceberg: unreadable (OperationalError: locked)" in console.export_text()


# ---------------------------------------------------------------------------- k2 status


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli, "configure_logging", lambda _cfg: None)  # keep structlog off the runner's stderr
    path = tmp_path / "k2.toml"
    path.write_text(
        f'[iceberg]\nwarehouse = "{tmp_path / "wh"}"\n\n[ingest]\nstatus_dir = "{tmp_path / "status"}"\n'
    )
    return path


def test_k2_status_exits_3_with_no_process_and_shows_pending_backfill_from_iceberg(
    config: Path, tmp_path: Path
) -> None:
    cfg = IcebergSettings(warehouse=str(tmp_path / "wh"))
    catalog = open_catalog(cfg)
    trades = ensure_tables(catalog, cfg)["trades"]
    empty = market_arrow_schema("trades").empty_table()
    pending = DeferredLedger()
    pending.add("trades", 0, 0, 99, {"tier3"}, 25, since=1_700_000_000.0)
    TableWriter(trades, "trades", "w").commit(empty, {0: 100}, {0: None}, deferred=pending)
    catalog.engine.dispose()  # type: ignore[attr-defined]

    result = CliRunner().invoke(cli.app, ["--config", str(config), "status", "--json"])

    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert doc["processes"] == []
    assert doc["deferred"]["trades"]["messages"] == 25
    assert doc["deferred"]["trades"]["partitions"][0]["last_offset"] == 99


def test_k2_status_exits_0_while_a_process_is_alive(config: Path, tmp_path: Path) -> None:
    import time

    write_status(tmp_path / "status", status("me", os.getpid(), time.time()))

    as_json = CliRunner().invoke(cli.app, ["--config", str(config), "status", "--json"])
    as_table = CliRunner().invoke(cli.app, ["--config", str(config), "status"])

    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["alive"] == 1
    assert as_table.exit_code == 0, as_table.output
    assert "ingest processes (1 alive)" in as_table.stdout
