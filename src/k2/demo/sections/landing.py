"""Section 2: start Kafka, replay the real ASX week, ingest it, and count it back per symbol and day.

The source counts come from the CSV files themselves (``load_asx``/``expected_report``), the
landed counts from a pyiceberg scan of each table: two independent readings that must agree on
every (table, symbol, trading day). Ingest commits every ``_FLUSH_ROWS`` rows, so the trades
table keeps several snapshots; their commit times are recorded for section 7's time travel.
"""

from __future__ import annotations

import time
from collections import Counter

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from k2.demo.compare import CommitPoint, count_mismatches, source_counts
from k2.demo.context import DemoContext
from k2.demo.services import BackgroundIngest, Kafka
from k2.feeds.asx import expected_report, load_asx, replay_asx
from k2.lake import TABLE_FOR_STREAM, open_catalog

__all__ = ["run"]

# Small enough that the week lands in several commits (time travel needs a past), large enough
# that commits stay a small share of the run.
_FLUSH_ROWS = 60_000
_INGEST_TIMEOUT_S = 300.0


def run(ctx: DemoContext) -> None:
    s, console = ctx.settings, ctx.console
    kafka = Kafka(s, external=ctx.options.bootstrap is not None)
    with console.status(f"starting Kafka on {kafka.bootstrap} …"):
        t0 = time.perf_counter()
        kafka.start()
    ctx.resources.callback(kafka.stop)
    ctx.kafka = kafka
    if kafka.external:
        console.print(f"Using the Kafka cluster at [bold]{kafka.bootstrap}[/] (given with --bootstrap).")
    else:
        console.print(
            f"Apache Kafka {s.broker.kafka_version} (KRaft, one node) running: pid {kafka.pid}, "
            f"[bold]{kafka.bootstrap}[/], up in {time.perf_counter() - t0:.1f} s."
        )

    data = load_asx(s.feeds.asx_data_dir, s.feeds.asx_timezone)
    ctx.source = data
    expected = expected_report(data)
    console.print(
        f"Source: [bold]{s.feeds.asx_data_dir}[/], ASX 10-14 March 2014, "
        f"{len(data.symbols)} companies: "
        + ", ".join(f"{n:,} {table}" for table, n in sorted(expected.counts.items()))
    )
    report = replay_asx(s, speed=None, progress=True)
    ctx.replay = report
    console.print(
        f"Replayed {report.produced_total:,} messages onto Kafka in {report.elapsed_s:.1f} s "
        f"({report.messages_per_second:,.0f} msg/s, idempotent producer keyed by symbol)."
    )

    flushing = s.model_copy(update={"ingest": s.ingest.model_copy(update={"flush_rows": _FLUSH_ROWS})})
    # CPU of this whole process while ingest runs in it: ingest's threads, plus a progress bar.
    cpu0 = time.process_time()
    ingest = BackgroundIngest(
        flushing, writer_id="demo-landing", exit_when_idle=2.0, max_seconds=_INGEST_TIMEOUT_S
    ).start()
    columns = (TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("ingest", total=report.produced_total)
        while ingest.running:
            bar.update(task, completed=ingest.app.report.consumed)
            time.sleep(0.2)
        bar.update(task, completed=ingest.app.report.consumed)
    result = ingest.join(timeout=10.0)
    cpu_s = time.process_time() - cpu0
    landed_rows = sum(result.landed.values())
    rate = result.consumed / result.seconds if result.seconds else 0.0
    ctx.ingest_rates = {
        "messages": landed_rows,
        "seconds": round(result.seconds, 3),
        "cpu_s": round(cpu_s, 3),
        "per_s": rate,
    }
    console.print(
        f"Ingest consumed {result.consumed:,}, landed {landed_rows:,} rows in {result.commits} commits, "
        f"{sum(result.rejected.values())} rejected, {result.duplicates} duplicates, "
        f"{result.seconds:.1f} s ({rate:,.0f} msg/s, {cpu_s:.1f} CPU s, "
        f"peak RSS {result.peak_rss_bytes / 2**20:,.0f} MiB)."
    )

    catalog = open_catalog(s.iceberg)
    landed: Counter[tuple[str, str, int]] = Counter()
    for stream, name in TABLE_FOR_STREAM.items():
        table = catalog.load_table((s.iceberg.namespace, name))
        rows = table.scan(selected_fields=("symbol", "session")).to_arrow()
        for r in rows.group_by(["symbol", "session"]).aggregate([([], "count_all")]).to_pylist():
            landed[(stream, r["symbol"], r["session"])] += r["count_all"]
        if stream == "trades":
            ctx.trade_commits = [
                CommitPoint(snap.snapshot_id, snap.timestamp_ms, int(snap.summary["total-records"] or 0))
                for snap in table.metadata.snapshots
                if snap.summary is not None
            ]
    want = source_counts(expected)
    console.print(_counts_table(want, landed))
    mismatches = count_mismatches(want, landed)
    ctx.checks.record(
        2,
        "counts_per_symbol_day",
        "trades and quotes per symbol and trading day in Iceberg equal the source files",
        not mismatches and len(want) > 0,
        f"{len(want)} (table, symbol, day) streams compared, {len(mismatches)} differ"
        + (f": first {mismatches[:3]}" if mismatches else ""),
        streams=len(want),
        mismatches=[(str(m.key), m.expected, m.found) for m in mismatches[:20]],
    )
    accounted = (
        result.consumed == report.produced_total
        and landed_rows == report.produced_total
        and not sum(result.rejected.values())
        and result.duplicates == 0
    )
    ctx.checks.record(
        2,
        "every_message_accounted",
        "every message produced was consumed and landed once: none rejected, none duplicated",
        accounted,
        f"produced {report.produced_total:,}, consumed {result.consumed:,}, landed {landed_rows:,}",
        produced=report.produced_total,
        consumed=result.consumed,
        landed=landed_rows,
        commits=result.commits,
    )


def _counts_table(want: dict[tuple[str, str, int], int], landed: Counter[tuple[str, str, int]]) -> Table:
    """Trades per symbol (rows) and trading day (columns): Iceberg's count, marked against the files."""
    days = sorted({d for (t, _, d) in want if t == "trades"})
    symbols = sorted({sym for (t, sym, _) in want if t == "trades"})
    table = Table(title="Trades in Iceberg per symbol and trading day (✓ = equals the source file)")
    table.add_column("symbol")
    for d in days:
        table.add_column(f"{d // 10_000}-{d // 100 % 100:02d}-{d % 100:02d}", justify="right")
    for sym in symbols:
        cells = []
        for d in days:
            n, got = want.get(("trades", sym, d), 0), landed.get(("trades", sym, d), 0)
            cells.append(f"{got:,} [green]✓[/]" if got == n else f"[red]{got:,} ≠ {n:,}[/]")
        table.add_row(sym, *cells)
    return table
