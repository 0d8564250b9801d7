"""Section 3: live before durable. One trade produced now is answered by the API from ingest's
live buffer, seconds before the Iceberg commit that makes it durable, and once (not twice) after.

Three clocks, all this machine's wall clock: when the tick was handed to Kafka, when the API
first answered it (polled over HTTP), and the commit time Iceberg records in the snapshot that
first holds it. The snapshot the early answer was read at is scanned too: it must lack the tick,
so the answer can only have taken it from the live buffer.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pyiceberg.expressions import EqualTo
from rich.table import Table

from k2.config import Settings
from k2.demo.context import DemoContext
from k2.demo.services import ApiServer, BackgroundIngest, wait_until
from k2.feeds.asx import EXCHANGE
from k2.feeds.producer import FeedProducer
from k2.ingest.status import read_statuses
from k2.lake import open_catalog
from k2.wire import SCHEMA_VERSION, Trade, encoder

__all__ = ["run"]

SYMBOL = "BHP"
_FAST_FLUSH_S = 5.0


def run(ctx: DemoContext) -> None:
    if ctx.kafka is None or not ctx.landed:
        ctx.checks.record(
            3,
            "visible_before_committed",
            "live before durable",
            False,
            "not run: section 2 did not start Kafka and land the week",
        )
        return
    s, console = ctx.settings, ctx.console
    flush_s = _FAST_FLUSH_S if ctx.options.fast else s.ingest.flush_seconds
    live_settings = s.model_copy(
        update={"ingest": s.ingest.model_copy(update={"flush_seconds": flush_s, "flush_rows": 10_000_000})}
    )
    ingest = BackgroundIngest(live_settings, writer_id="demo-live", max_seconds=3600.0).start()
    ctx.resources.callback(lambda: ingest.running and ingest.stop())
    api = ctx.resources.enter_context(ApiServer(s))
    ctx.api = api
    console.print(
        f"Ingest runs with a commit every {flush_s:g} s; the API serves [bold]{api.url}[/] "
        "(Iceberg snapshot ∪ ingest's live buffer, found through its status file)."
    )
    with console.status("waiting for ingest to own every trades partition …"):
        wait_until("ingest to own every trades partition", lambda: _owns_trades(s), timeout=60.0)
        ingest.raise_if_failed()

    before = api.get("/v1/trades", symbol=SYMBOL, last=1)["rows"]
    price = float(before[-1]["price"]) if before else 40.0
    tick = _tick(price, f"demo-live-{uuid.uuid4().hex[:8]}")
    with FeedProducer(s.kafka) as producer:
        producer.connect([s.kafka.topics.trades])
        produced_at = time.time()
        producer.send_many([(s.kafka.topics.trades, SYMBOL.encode(), encoder.encode(tick))])
        producer.flush()
        acked_at = time.time()
    ctx.live_trade_id = tick.trade_id
    console.print(f"Produced one {SYMBOL} trade now: {tick.qty} @ {tick.price}, trade_id {tick.trade_id}.")

    seen: dict[str, Any] = {}

    def answered() -> bool:
        body = api.get("/v1/trades", symbol=SYMBOL, last=1)
        if body["rows"] and body["rows"][-1]["trade_id"] == tick.trade_id:
            seen.update(body)
            return True
        return False

    visible_at = wait_until("the tick to be answered by the API", answered, timeout=60.0, every=0.01)
    read_at = seen["coverage"]["snapshots"].get("trades")

    table = open_catalog(s.iceberg).load_table((s.iceberg.namespace, "trades"))
    commit: dict[str, int] = {}

    def committed() -> bool:
        table.refresh()
        snap = table.current_snapshot()
        if snap is None or snap.snapshot_id == commit.get("looked_at"):
            return False
        commit["looked_at"] = snap.snapshot_id
        if _holds(table, snap.snapshot_id, tick.trade_id):
            commit.update(snapshot_id=snap.snapshot_id, committed_ms=snap.timestamp_ms)
            return True
        return False

    with console.status(f"waiting for the commit (every {flush_s:g} s) …"):
        wait_until("the tick's Iceberg commit", committed, timeout=flush_s + 60.0, every=0.1)
    committed_at = commit["committed_ms"] / 1000.0
    early_snapshot_lacks_it = read_at is None or not _holds(table, int(read_at), tick.trade_id)

    after = api.get("/v1/trades", symbol=SYMBOL, day=_sydney_day(produced_at).isoformat())
    copies = sum(1 for r in after["rows"] if r["trade_id"] == tick.trade_id)
    stopped = ingest.stop()

    console.print(_timeline(produced_at, acked_at, visible_at, committed_at, read_at, commit["snapshot_id"]))
    visible_ms, durable_ms = (visible_at - produced_at) * 1000, (committed_at - produced_at) * 1000
    ctx.checks.record(
        3,
        "visible_before_committed",
        "a tick produced now is answered by the API before its Iceberg commit, from the live buffer",
        visible_at < committed_at and early_snapshot_lacks_it,
        f"visible after {visible_ms:,.0f} ms, committed after {durable_ms:,.0f} ms; the answer was "
        f"read at snapshot {read_at}, which "
        + ("lacks the tick" if early_snapshot_lacks_it else "ALREADY HELD it"),
        produced_at=produced_at,
        visible_at=visible_at,
        committed_at=committed_at,
        visible_ms=round(visible_ms, 1),
        committed_ms=round(durable_ms, 1),
        flush_seconds=flush_s,
    )
    ctx.checks.record(
        3,
        "once_after_commit",
        "after its commit the same tick is answered exactly once (live and history never overlap)",
        copies == 1,
        f"{copies} cop{'y' if copies == 1 else 'ies'} of {tick.trade_id} in the answer after snapshot "
        f"{commit['snapshot_id']}; ingest stopped ({stopped.exit_reason}) after {stopped.commits} commit(s)",
        copies=copies,
    )


def _owns_trades(s: Settings) -> bool:
    wanted = {f"{s.kafka.topics.trades}[{p}]" for p in range(s.kafka.partitions)}
    return any(st.live_endpoint and wanted <= set(st.partitions) for st in read_statuses(s.ingest.status_dir))


def _sydney_day(epoch_s: float) -> Any:
    return datetime.fromtimestamp(epoch_s, ZoneInfo("Australia/Sydney")).date()


def _tick(price: float, trade_id: str) -> Trade:
    now = time.time()
    day = _sydney_day(now)
    return Trade(
        schema_version=SCHEMA_VERSION,
        exchange=EXCHANGE,
        symbol=SYMBOL,
        session=day.year * 10_000 + day.month * 100 + day.day,
        seq=1,
        ts=int(now * 1_000_000),
        price=price,
        qty=100,
        trade_id=trade_id,
    )


def _holds(table: Any, snapshot_id: int, trade_id: str) -> bool:
    scan = table.scan(
        row_filter=EqualTo("trade_id", trade_id), selected_fields=("trade_id",), snapshot_id=snapshot_id
    )
    return bool(scan.to_arrow().num_rows)


def _timeline(
    produced: float, acked: float, visible: float, committed: float, read_at: Any, snapshot: int
) -> Table:
    def at(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]

    table = Table(title="One tick, three clocks (UTC)")
    for col in ("moment", "wall clock", "after produce"):
        table.add_column(col, justify="right" if col == "after produce" else "left")
    table.add_row("handed to Kafka", at(produced), "0 ms")
    table.add_row("acknowledged by Kafka", at(acked), f"{(acked - produced) * 1000:,.0f} ms")
    table.add_row(
        f"answered by GET /v1/trades (snapshot {read_at} ∪ live)",
        at(visible),
        f"[bold green]{(visible - produced) * 1000:,.0f} ms[/]",
    )
    table.add_row(
        f"committed to Iceberg (snapshot {snapshot})",
        at(committed),
        f"{(committed - produced) * 1000:,.0f} ms",
    )
    return table
