"""Section 7: questions a quant asks, through the API, and the same table read by another engine.

BHP on 11 March 2014 (the Sydney trading day): 1-minute bars (charted), VWAP, the newest trades,
one SQL query, the table as it was between two of section 2's commits, and DuckDB's own Iceberg
reader on the table's current metadata file. Every figure is checked against another reading:
the source file's count, the SQL answer, the snapshot pyiceberg reads, DuckDB.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
from rich.table import Table

from k2.demo.chart import bars_chart
from k2.demo.compare import pick_time_travel, same_vwap
from k2.demo.context import DemoContext
from k2.demo.services import ApiServer
from k2.errors import K2Error
from k2.lake import open_catalog

__all__ = ["duckdb_with_iceberg", "run"]

SYMBOL = "BHP"
DAY = "2014-03-11"
SESSION = 20140311
TZ = "Australia/Sydney"
SQL = (
    "SELECT symbol, count(*) AS trades, sum(qty) AS volume, sum(price * qty) / sum(qty) AS vwap "
    f"FROM trades WHERE session = {SESSION} GROUP BY symbol ORDER BY volume DESC"
)


def run(ctx: DemoContext) -> None:
    if not ctx.landed or ctx.source is None:
        ctx.checks.record(
            7, "bars_add_up", "questions a quant asks", False, "not run: section 2 did not land the week"
        )
        return
    s, console = ctx.settings, ctx.console
    api = ctx.api or ctx.resources.enter_context(ApiServer(s))
    ctx.api = api
    console.print(f"Asking [bold]{api.url}[/], as any client would.")

    # 1-minute bars and the day's VWAP.
    bars = api.get("/v1/bars", symbol=SYMBOL, day=DAY, interval="1-MINUTE-LAST", limit=2000)["rows"]
    console.print(_bars_table(bars))
    chart = bars_chart(
        bars,
        f"{SYMBOL} {DAY} (ASX), 1-minute bars from the k2 API",
        TZ,
        ctx.options.out / f"{SYMBOL.lower()}-{DAY}-1min.png",
    )
    ctx.outputs.append(chart)
    console.print(f"Chart: [bold]{chart}[/]")
    vwap = api.get("/v1/vwap", symbols=SYMBOL, day=DAY)["rows"][0]
    console.print(
        f"VWAP {SYMBOL} {DAY}: [bold]{vwap['vwap']:.6f}[/] over {vwap['trades']:,} trades, "
        f"volume {vwap['volume']:,}"
    )
    in_file = ctx.source.streams.get(("trades", SYMBOL, SESSION), 0)
    bar_trades, bar_volume = sum(b["trades"] for b in bars), sum(b["volume"] for b in bars)
    ctx.checks.record(
        7,
        "bars_add_up",
        f"{SYMBOL}'s 1-minute bars on {DAY} add up to the day's VWAP answer and to the source file",
        bar_trades == vwap["trades"] == in_file and bar_volume == vwap["volume"],
        f"{len(bars)} bars: {bar_trades:,} trades, volume {bar_volume:,}; /v1/vwap {vwap['trades']:,} "
        f"trades, volume {vwap['volume']:,}; source file {in_file:,} trades",
        bars=len(bars),
        trades=vwap["trades"],
        volume=vwap["volume"],
        vwap=vwap["vwap"],
    )

    # The newest trades: section 3's live tick is the newest BHP trade now.
    last = api.get("/v1/trades", symbol=SYMBOL, last=5)
    console.print(_trades_table(last["rows"], ctx.live_trade_id))

    # One SQL query.
    console.print(f"POST /v1/sql  [dim]{SQL}[/]")
    rows = api.post("/v1/sql", {"sql": SQL})["rows"]
    console.print(_plain_table(f"Trading day {DAY}, by volume", rows))
    bhp = next((r for r in rows if r["symbol"] == SYMBOL), None)
    ctx.checks.record(
        7,
        "sql_agrees",
        "the SQL answer for BHP equals the /v1/vwap answer",
        bhp is not None and bhp["trades"] == vwap["trades"] and same_vwap(bhp["vwap"], vwap["vwap"]),
        f"SQL: {bhp}" if bhp else "no BHP row in the SQL answer",
    )

    _time_travel(ctx, api)
    _other_engine(ctx, vwap)


def _time_travel(ctx: DemoContext, api: ApiServer) -> None:
    s, console = ctx.settings, ctx.console
    picked = pick_time_travel(ctx.trade_commits)
    name = "time_travel"
    claim = "as_of a moment between two commits answers exactly the table as it was then"
    if picked is None:
        ctx.checks.record(7, name, claim, False, f"no two commits to travel between: {ctx.trade_commits}")
        return
    before, after, at_ms = picked
    at = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")
    body = api.get("/v1/vwap", as_of=at)
    answered = sum(r["trades"] for r in body["rows"])
    read_at = body["coverage"]["snapshots"].get("trades")
    table = open_catalog(s.iceberg).load_table((s.iceberg.namespace, "trades"))
    then = table.scan(snapshot_id=before.snapshot_id, selected_fields=("ts",)).to_arrow()
    latest_local = then["ts"].to_pylist()
    up_to = max(latest_local).astimezone(ZoneInfo(TZ)) if latest_local else None
    now_rows = ctx.trade_commits[-1].rows if ctx.trade_commits else 0
    console.print(
        f"GET /v1/vwap?as_of={at}: the table between commit {_clock(before.committed_ms)} and "
        f"{_clock(after.committed_ms)} (UTC) held [bold]{answered:,}[/] trades, the week up to "
        f"{up_to:%a %d %b %H:%M:%S} Sydney; at the end of section 2 it held {now_rows:,}."
        if up_to
        else f"GET /v1/vwap?as_of={at}: {answered:,} trades"
    )
    ok = read_at == str(before.snapshot_id) and answered == before.rows == then.num_rows < now_rows
    ctx.checks.record(
        7,
        name,
        claim,
        ok,
        f"as_of {at} read snapshot {read_at} (expected {before.snapshot_id}): {answered:,} trades; "
        f"pyiceberg at that snapshot {then.num_rows:,}; its summary {before.rows:,}; later {now_rows:,}",
        as_of=at,
        snapshot_id=str(before.snapshot_id),
        trades=answered,
    )


def _other_engine(ctx: DemoContext, vwap: dict[str, Any]) -> None:
    s, console = ctx.settings, ctx.console
    table = open_catalog(s.iceberg).load_table((s.iceberg.namespace, "trades"))
    metadata = table.metadata_location.removeprefix("file://")
    con = duckdb_with_iceberg()
    try:
        found = con.execute(
            "SELECT count(*), sum(qty), sum(price * qty) / sum(qty) FROM iceberg_scan(?) "
            "WHERE symbol = ? AND session = ?",
            [metadata, SYMBOL, SESSION],
        ).fetchone()
    finally:
        con.close()
    assert found is not None
    n, volume, dvwap = int(found[0]), int(found[1] or 0), found[2]
    console.print(
        f"DuckDB {duckdb.__version__}, iceberg_scan('{Path(metadata).name}'): {n:,} trades, "
        f"volume {volume:,}, VWAP {dvwap:.6f}"
        if dvwap is not None
        else "DuckDB found no rows"
    )
    ctx.checks.record(
        7,
        "duckdb_same_answer",
        "DuckDB's Iceberg reader, on the same table, gives the same count, volume and VWAP as the API",
        n == vwap["trades"] and volume == vwap["volume"] and same_vwap(dvwap, vwap["vwap"]),
        f"DuckDB {n:,} trades, volume {volume:,}, VWAP {dvwap}; API {vwap['trades']:,}, "
        f"{vwap['volume']:,}, {vwap['vwap']}",
        metadata_location=table.metadata_location,
    )


def duckdb_with_iceberg() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the iceberg extension loaded from its pip wheel (no download).

    Raises:
        K2Error: the ``duckdb-extension-avro``/``-iceberg`` wheels are not installed.
    """
    con = duckdb.connect()
    for name in ("avro", "iceberg"):  # iceberg reads manifests with avro: load it first
        spec = importlib.util.find_spec(f"duckdb_extension_{name}")
        files = (
            sorted(Path(next(iter(spec.submodule_search_locations))).rglob(f"{name}.duckdb_extension"))
            if spec and spec.submodule_search_locations
            else []
        )
        if not files:
            con.close()
            raise K2Error(f"no {name}.duckdb_extension: install duckdb-extension-{name}")
        con.execute(f"LOAD '{files[-1]}'")
    return con


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def _local(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(TZ)).strftime("%H:%M")


def _bars_table(bars: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{SYMBOL} {DAY}, 1-MINUTE-LAST bars: first and last three of {len(bars)}")
    for col in ("minute (Sydney)", "open", "high", "low", "close", "volume", "vwap", "trades"):
        table.add_column(col, justify="right")
    shown = bars if len(bars) <= 6 else [*bars[:3], None, *bars[-3:]]
    for b in shown:
        if b is None:
            table.add_row(*["…"] * 8)
            continue
        table.add_row(
            _local(b["bar_start"]),
            *(f"{b[k]:.3f}" for k in ("open", "high", "low", "close")),
            f"{b['volume']:,}",
            f"{b['vwap']:.4f}",
            str(b["trades"]),
        )
    return table


def _trades_table(rows: list[dict[str, Any]], live_id: str | None) -> Table:
    table = Table(title=f"GET /v1/trades?symbol={SYMBOL}&last=5")
    for col in ("ts (UTC)", "session", "seq", "price", "qty", "trade_id"):
        table.add_column(col)
    for r in rows:
        mark = " [green](section 3's live tick)[/]" if r["trade_id"] == live_id else ""
        table.add_row(
            str(r["ts"]),
            str(r["session"]),
            str(r["seq"]),
            str(r["price"]),
            str(r["qty"]),
            f"{r['trade_id']}{mark}",
        )
    return table


def _plain_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    if not rows:
        return table
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "symbol" else "right")
    for r in rows:
        table.add_row(
            *(
                f"{v:,.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                for v in r.values()
            )
        )
    return table
