"""A real Iceberg warehouse (SQLite catalog in a temp dir) and a fake live side, for engine tests.

Rows are built by hand, one dict per trade or quote, so every expected value in the tests can be
computed from the same dicts in plain Python, independently of the engine.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import In
from pyiceberg.io import load_file_io

from k2.config import ApiSettings, IcebergSettings
from k2.deferred_ledger import DeferredLedger
from k2.ingest.committer import gaps_to_arrow, prepare_rows
from k2.lake import TableWriter, ensure_tables, open_catalog
from k2.lake.tables import GAPS_TABLE, market_arrow_schema
from k2.live_protocol import PartitionLive
from k2.query.engine import Engine
from k2.query.file_cache import FileCache
from k2.query.history import History
from k2.query.live_client import LiveFetch, LivePiece
from k2.query.sandbox import Sandbox
from k2.sequence_tracker import Gap

TOPIC_OF = {"trades": "trades", "quotes": "quotes", "reference_data": "reference"}
T0 = int(datetime(2026, 3, 10, 23, 0, tzinfo=UTC).timestamp() * 1_000_000)  # 10:00 in Sydney (AEDT)
SECOND = 1_000_000

Row = dict[str, Any]


def trade(symbol: str, ts: int, partition: int, offset: int, price: float, qty: int, **kw: Any) -> Row:
    """One trade; ``seq`` defaults to the offset (strictly increasing per partition, as a feed)."""
    return {
        "schema_version": 1,
        "exchange": kw.get("exchange", "ASX"),
        "symbol": symbol,
        "session": kw.get("session", 20260311),
        "seq": kw.get("seq", offset + 1),
        "ts": ts,
        "price": price,
        "qty": qty,
        "conditions": [],
        "trade_id": f"t{partition}-{offset}",
        "venue": None,
        "ingest_ts": ts + 1_000,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def quote(symbol: str, ts: int, partition: int, offset: int, bid: float, ask: float, **kw: Any) -> Row:
    return {
        "schema_version": 1,
        "exchange": kw.get("exchange", "ASX"),
        "symbol": symbol,
        "session": kw.get("session", 20260311),
        "seq": kw.get("seq", offset + 1),
        "ts": ts,
        "bid": bid,
        "ask": ask,
        "bid_size": kw.get("bid_size", 100),
        "ask_size": kw.get("ask_size", 200),
        "ingest_ts": ts + 1_000,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def arrow(table: str, rows: Iterable[Row]) -> pa.Table:
    stream = "reference" if table == "reference_data" else table
    return pa.Table.from_pylist(list(rows), schema=market_arrow_schema(stream))  # type: ignore[arg-type]


def next_offsets(rows: Iterable[Row]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in rows:
        out[r["kafka_partition"]] = max(out.get(r["kafka_partition"], 0), r["kafka_offset"] + 1)
    return out


@dataclass
class Lake:
    """The four k2 tables in a temp warehouse, with a writer per market table."""

    root: Path
    catalog: Catalog
    cfg: IcebergSettings
    writers: dict[str, TableWriter] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path) -> Lake:
        cfg = IcebergSettings(warehouse=str(root))
        catalog = open_catalog(cfg)
        tables = ensure_tables(catalog, cfg)
        lake = cls(root, catalog, cfg)
        for name in ("trades", "quotes"):
            lake.writers[name] = TableWriter(tables[name], TOPIC_OF[name], "test-writer")
        return lake

    def commit(self, table: str, rows: list[Row], deferred: DeferredLedger | None = None) -> int:
        """Append ``rows`` (one commit) with stored offsets moved past them; the new snapshot id."""
        writer = self.writers[table]
        stored: dict[int, int | None] = dict(writer.stored_offsets())
        offsets = next_offsets(rows)
        expected = {p: stored.get(p) for p in offsets}
        if deferred is not None:
            expected.update({p: stored.get(p) for _, p in deferred.partitions()})
        stream = "reference" if table == "reference_data" else table
        result = writer.commit(prepare_rows(stream, arrow(table, rows)), offsets, expected, deferred)  # type: ignore[arg-type]
        assert result.snapshot_id is not None
        return result.snapshot_id

    def write_gaps(self, gaps: list[tuple[str, Gap]]) -> None:
        """Rows of ``sequence_gaps`` as the committer writes them (``(table, gap)`` pairs)."""
        gaps_table = self.catalog.load_table((self.cfg.namespace, GAPS_TABLE))
        by_table: dict[str, dict[str, list[Gap]]] = {}
        for table, g in gaps:
            key = f"{table}/{g.exchange}/{g.symbol}/{g.session}"
            by_table.setdefault(table, {}).setdefault(key, []).append(g)
        for table, records in by_table.items():  # as the committer does: a stream's rows as a unit
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                gaps_table.overwrite(
                    gaps_to_arrow(table, records), overwrite_filter=In("stream_key", list(records))
                )

    def close(self) -> None:
        self.catalog.engine.dispose()  # type: ignore[attr-defined]


@dataclass
class FakeLive:
    """The live side: per table, the pieces endpoints answer with, and endpoints that fail.

    ``before_return`` runs inside ``fetch`` after the pieces are taken, e.g. to land a commit
    between the buffer read and the engine's pin (a snapshot that is stale by the time it is read).
    """

    pieces: dict[str, list[LivePiece]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    before_return: Callable[[str], None] | None = None
    calls: list[tuple[str, tuple[str, ...] | None, int | None, int | None]] = field(default_factory=list)
    lasts: list[int | None] = field(default_factory=list)

    def add(
        self,
        table: str,
        endpoint: str,
        rows: list[Row],
        partitions: dict[int, tuple[int, int]],
        process: dict[str, Any] | None = None,
    ) -> None:
        """An endpoint's answer: ``rows`` and ``partition -> (floor, consumed)``."""
        ranges = {p: PartitionLive(f, c) for p, (f, c) in partitions.items()}
        piece = LivePiece(
            endpoint, arrow(table, rows), ranges, process or {"level": 0, "level_name": "NORMAL"}
        )
        self.pieces.setdefault(table, []).append(piece)

    def fetch(
        self,
        table: str,
        symbols: Iterable[str] | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        columns: Iterable[str] | None = None,
        last: int | None = None,
    ) -> LiveFetch:
        """Like an ingest process: filter at the source, and with ``last`` send only the newest."""
        wanted = None if symbols is None else tuple(symbols)
        self.calls.append((table, wanted, start_us, end_us))
        self.lasts.append(last)
        out = LiveFetch(failed=dict(self.failed))
        for piece in self.pieces.get(table, []):
            if piece.endpoint in self.failed:
                continue
            out.pieces.append(
                LivePiece(
                    piece.endpoint,
                    _newest(_source_filter(piece.table, wanted, start_us, end_us), last),
                    piece.partitions,
                    piece.process,
                )
            )
        if self.before_return is not None:
            self.before_return(table)
        return out

    def ping_all(self) -> dict[str, dict[str, Any] | str]:
        names = {p.endpoint for ps in self.pieces.values() for p in ps} | set(self.failed)
        return {n: self.failed.get(n, {"level": 0}) for n in sorted(names)}


def _newest(t: pa.Table, last: int | None) -> pa.Table:
    if last is None or t.num_rows <= last:
        return t
    return t.take(pc.select_k_unstable(t, k=last, sort_keys=[("ts", "descending")]))


def _source_filter(
    t: pa.Table, symbols: tuple[str, ...] | None, start: int | None, end: int | None
) -> pa.Table:
    """What an ingest process does with a ticket: filter by symbol and ``[start, end)`` at the source."""
    keep = []
    for i, r in enumerate(t.select(["symbol", "ts"]).to_pylist()):
        ts = int(r["ts"].timestamp() * 1_000_000)
        if symbols is not None and r["symbol"] not in symbols:
            continue
        if (start is not None and ts < start) or (end is not None and ts >= end):
            continue
        keep.append(i)
    return t.take(pa.array(keep, pa.int64()))


def build_engine(lake: Lake, live: FakeLive | None, settings: ApiSettings | None = None) -> Engine:
    api = settings or ApiSettings(duckdb_memory_limit="256MB", duckdb_threads=2)
    history = History(lake.catalog, lake.cfg.namespace, TOPIC_OF)
    props = dict(lake.catalog.properties)

    def opener(path: str) -> Any:
        return load_file_io(props, path).new_input(path).open()

    cache = FileCache(opener, api.history_cache_bytes)
    return Engine(history, cache, live, Sandbox(api), api, TOPIC_OF)  # type: ignore[arg-type]


def micros(value: Any) -> int:
    """``ts`` of an engine answer (a datetime) as epoch microseconds."""
    return int(value.timestamp() * 1_000_000) if isinstance(value, datetime) else int(value)


def key(row: Row) -> tuple[int, int, int]:
    return (micros(row["ts"]), row["kafka_partition"], row["kafka_offset"])
