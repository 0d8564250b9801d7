"""The hybrid query engine: one Iceberg snapshot ∪ every ingest process's live buffer, exactly.

Every read of a market table follows the same steps (the read rule, ``k2.query.merge``):
1. ask every live endpoint for the table's buffered rows, filtered by symbol and time at the source;
2. *then* pin the table's current snapshot S (reading the buffers first is what makes the rule
   exact: a row a buffer no longer holds was committed before step 1, so S has it);
3. keep the live rows at or past S's stored offset per partition, each (partition, offset) once;
   a buffer that reports rows S cannot have yet (S too old) makes the engine re-pin once;
4. read S's rows from the history file cache (only the files whose manifest bounds may hold the
   symbols and times asked), union, then shape the answer (order, limit, bars, VWAP) in DuckDB.
Time travel (``as_of``) reads the chosen snapshot alone: the buffers only hold the present.

Every answer carries its ``Coverage`` (snapshot, live offsets, missing live parts, level, deferred
ranges, open gaps). User SQL runs in the sandbox over views that are history ∪ live.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.io import load_file_io

from k2.config import ApiSettings, Settings
from k2.errors import QueryRejected
from k2.lake.tables import GAPS_SCHEMA, GAPS_TABLE, market_arrow_schema
from k2.query.file_cache import FileCache, trade_totals
from k2.query.history import History, PinnedTable
from k2.query.live_client import LiveClient, LiveFetch, endpoints_from_status
from k2.query.merge import LiveSide, merge_live
from k2.query.result import Coverage, DeferredRange, QueryResult
from k2.query.sandbox import Sandbox
from k2.query.spec import AsOf, BarInterval, TimeRange
from k2.wire import Stream

__all__ = ["MARKET_TABLES", "Engine"]

MARKET_TABLES: dict[str, Stream] = {"trades": "trades", "quotes": "quotes", "reference_data": "reference"}
_SYMBOL = re.compile(r"^[A-Za-z0-9._:/\-]{1,32}$")
# A trading day is an exchange-local date: in UTC it lies within these bounds for any time zone.
_TZ_SLACK = timedelta(hours=14)


def _micros(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1_000_000)


def _check_symbols(symbols: Iterable[str] | None) -> frozenset[str] | None:
    if symbols is None:
        return None
    out = frozenset(s.strip() for s in symbols if s.strip())
    bad = [s for s in out if not _SYMBOL.match(s)]
    if bad:
        raise QueryRejected("bad_parameter", f"not a symbol: {bad[0][:40]!r}")
    return out or None


@dataclass(slots=True)
class _LivePart:
    read: _Read
    pinned: PinnedTable
    rows_list: list[pa.Table]


@dataclass(slots=True)
class _Read:
    """Rows of one table (history ∪ live) and what they cover."""

    rows: pa.Table
    pinned: PinnedTable
    live_from: dict[int, int]
    missing: list[str]
    fetched: LiveFetch | None = None


def _bounds(when: TimeRange) -> tuple[int | None, int | None, int | None]:
    """UTC micros to prune by, and the session (YYYYMMDD) to filter on, for a time range."""
    start, end = _micros(when.start), _micros(when.end)
    session = None
    if when.day is not None:
        session = when.day.year * 10_000 + when.day.month * 100 + when.day.day
        day0 = datetime(when.day.year, when.day.month, when.day.day, tzinfo=UTC)
        lo, hi = _micros(day0 - _TZ_SLACK), _micros(day0 + timedelta(days=1) + _TZ_SLACK)
        start = lo if start is None else max(start, lo)  # type: ignore[type-var]
        end = hi if end is None else min(end, hi)  # type: ignore[type-var]
    return start, end, session


class Engine:
    """Answers ``k2.query.spec.Queries`` over a catalog and the live endpoints (see module doc)."""

    def __init__(
        self,
        history: History,
        cache: FileCache,
        live: LiveClient | None,
        sandbox: Sandbox,
        settings: ApiSettings,
        topic_of: dict[str, str],
        status_source: Any = None,
    ) -> None:
        self._history = history
        self._cache = cache
        self._live = live
        self._sandbox = sandbox
        self._s = settings
        self._topic_of = topic_of
        self._status_source = status_source
        self._datasets: dict[tuple[str, int], ds.Dataset] = {}
        self._known: dict[tuple[str, str], set[int]] = {}  # (endpoint, table) -> partitions last seen

    # -- the read rule -------------------------------------------------------------------------

    def _read(
        self,
        table: str,
        symbols: frozenset[str] | None,
        start_us: int | None,
        end_us: int | None,
        as_of: AsOf | None,
        mode: str = "all",
        want: int | None = None,
        exchange: str | None = None,
        session: int | None = None,
    ) -> _Read:
        """``mode``: "all" rows in range; "newest": at least the newest ``want`` of ``exchange``
        and ``session`` (the caller filters by them); "last": the last row of each symbol and
        exchange (per history file; the caller picks the newest)."""
        # The newest N can be cut at the source only when the caller keeps every row it gets.
        last = want if mode == "newest" and exchange is None and session is None else None
        live = self._live_part(table, symbols, start_us, end_us, as_of, last)
        history = self._history_rows(
            live.pinned, symbols, start_us, end_us, mode, want, live.rows_list, exchange, session
        )
        schema = market_arrow_schema(MARKET_TABLES[table])
        parts = [t.select(schema.names).cast(schema) for t in [*history, *live.rows_list] if t.num_rows]
        live.read.rows = pa.concat_tables(parts) if parts else schema.empty_table()
        return live.read

    def _live_part(
        self,
        table: str,
        symbols: frozenset[str] | None,
        start_us: int | None,
        end_us: int | None,
        as_of: AsOf | None,
        last: int | None = None,
    ) -> _LivePart:
        """Steps 1-3 of the read rule: buffers first, then the snapshot, then the merge.

        ``last``: each buffer sends only its newest ``last`` matching rows. Still exact for "the
        newest N": a row among the newest N overall is among the newest N of its own buffer, and the
        rows the merge then drops (below S[p]) are in the snapshot."""
        fetched = None
        if as_of is None and self._live is not None:
            symbol_list = sorted(symbols) if symbols else None
            if last is None:
                fetched = self._live.fetch(table, symbol_list, start_us, end_us)
            else:
                fetched = self._live.fetch(table, symbol_list, start_us, end_us, last=last)
        pinned = self._history.pin(table, as_of)
        live_rows: list[pa.Table] = []
        live_from: dict[int, int] = {}
        missing: list[str] = []
        if fetched is not None:
            merged = merge_live(pinned.offsets, self._sides(table, fetched))
            if merged.unreadable:  # S older than what a buffer already released: pin again
                pinned = self._history.pin(table)
                merged = merge_live(pinned.offsets, self._sides(table, fetched))
            live_rows, live_from = merged.rows, merged.live_from
            missing = [f"{table}/{p}: offsets {a}..{b - 1}" for p, (a, b) in merged.unreadable.items()]
            missing += self._missing(table, fetched)
        schema = market_arrow_schema(MARKET_TABLES[table])
        read = _Read(schema.empty_table(), pinned, live_from, missing, fetched)
        return _LivePart(read, pinned, live_rows)

    def _sides(self, table: str, fetched: LiveFetch) -> list[LiveSide]:
        for piece in fetched.pieces:
            self._known[(piece.endpoint, table)] = set(piece.partitions)
        return [LiveSide(p.table, p.partitions) for p in fetched.pieces]

    def _missing(self, table: str, fetched: LiveFetch) -> list[str]:
        """Partitions whose live part is absent: those a failed endpoint owned when last seen and no
        answering endpoint reports now."""
        answered = {p for piece in fetched.pieces for p in piece.partitions}
        out = []
        for endpoint, reason in sorted(fetched.failed.items()):
            known = self._known.get((endpoint, table))
            if known is None:
                out.append(f"{table}/? ({endpoint}: {reason}; its partitions are unknown)")
            else:
                out += [f"{table}/{p} ({endpoint}: {reason})" for p in sorted(known - answered)]
        return out

    def _history_rows(
        self,
        pinned: PinnedTable,
        symbols: frozenset[str] | None,
        start_us: int | None,
        end_us: int | None,
        mode: str,
        want: int | None,
        live_rows: list[pa.Table],
        exchange: str | None = None,
        session: int | None = None,
    ) -> list[pa.Table]:
        files = [f for f in pinned.files if f.may_hold(start_us, end_us, symbols)]
        if mode == "last":
            return [self._cache.get(f.path).last_rows(symbols) for f in files]
        if not (mode == "newest" and want):
            return [self._cache.get(f.path).rows(symbols, start_us, end_us) for f in files]
        # Newest N: read files newest first and stop once N rows are newer than any file left.
        # Only rows the caller keeps (exchange, session) count towards N, or the answer is short.
        files.sort(key=lambda f: f.ts_max if f.ts_max is not None else 2**62, reverse=True)
        out: list[pa.Table] = []

        def kept_ts(t: pa.Table) -> np.ndarray:
            return _filter(t, exchange, session)["ts"].cast(pa.int64()).to_numpy()

        ts_seen: list[np.ndarray] = [kept_ts(t) for t in live_rows if t.num_rows]
        for f in files:
            if ts_seen and sum(len(a) for a in ts_seen) >= want:
                all_ts = np.concatenate(ts_seen)
                nth = np.partition(all_ts, len(all_ts) - want)[len(all_ts) - want]
                if f.ts_max is not None and nth > f.ts_max:
                    break
            part = self._cache.get(f.path).rows(symbols, start_us, end_us)
            if part.num_rows:
                out.append(part)
                ts_seen.append(kept_ts(part))
        return out

    def _coverage(
        self, reads: dict[str, _Read], as_of: AsOf | None, symbols: frozenset[str] | None
    ) -> Coverage:
        cov = Coverage(as_of=None if as_of is None else str(as_of))
        for name, r in reads.items():
            cov.snapshots[name] = r.pinned.snapshot_id
            if r.live_from:
                cov.live_from[name] = dict(sorted(r.live_from.items()))
            cov.live_missing += r.missing
            topic = self._topic_of.get(name)
            if topic:
                for t, p in r.pinned.deferred.partitions():
                    if t == topic:
                        cov.deferred += [
                            DeferredRange(t, p, d.first, d.last) for d in r.pinned.deferred.ranges(t, p)
                        ]
        _add_live_facts(cov, [r.fetched for r in reads.values() if r.fetched is not None])
        cov.open_gaps = self._open_gaps(list(reads), symbols)
        return cov

    def _open_gaps(self, tables: list[str], symbols: frozenset[str] | None) -> int:
        gaps = self._gaps_table(None)
        if gaps.num_rows == 0 or not tables:
            return 0
        mask = pc.and_(pc.equal(gaps["status"], "open"), pc.is_in(gaps["table"], pa.array(tables)))
        if symbols:
            mask = pc.and_(mask, pc.is_in(gaps["symbol"], pa.array(sorted(symbols))))
        return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)

    def _gaps_table(self, as_of: AsOf | None) -> pa.Table:
        pinned = self._history.pin(GAPS_TABLE, as_of)
        if pinned.snapshot_id is None:
            return GAPS_SCHEMA.empty_table()
        parts = [self._cache.get(f.path).table for f in pinned.files]
        return (
            pa.concat_tables([p.select(GAPS_SCHEMA.names).cast(GAPS_SCHEMA) for p in parts])
            if parts
            else GAPS_SCHEMA.empty_table()
        )

    # -- typed queries -------------------------------------------------------------------------

    def trades(self, **kw: Any) -> QueryResult:
        return self._ticks("trades", **kw)

    def quotes(self, **kw: Any) -> QueryResult:
        return self._ticks("quotes", **kw)

    def _ticks(
        self,
        table: str,
        *,
        symbol: str | None,
        exchange: str | None,
        when: TimeRange,
        last: int | None,
        limit: int,
        cursor: str | None,
        as_of: AsOf | None,
    ) -> QueryResult:
        symbols = _check_symbols([symbol] if symbol else None)
        start, end, session = _bounds(when)
        limit = min(limit, self._s.max_rows)
        if last is not None and not 1 <= last <= self._s.max_rows:
            raise QueryRejected("bad_parameter", f"last must be 1..{self._s.max_rows}")
        mode = "newest" if last is not None else "all"
        r = self._read(table, symbols, start, end, as_of, mode, last, exchange, session)
        rows = _filter(r.rows, exchange, session)
        rows = rows.sort_by(
            [("ts", "ascending"), ("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
        )
        truncated, next_cursor = False, None
        if last is not None:
            rows = rows.slice(max(0, rows.num_rows - last))
        else:
            if cursor:
                rows = _after(rows, _decode_cursor(cursor))
            if rows.num_rows > limit:
                rows, truncated = rows.slice(0, limit), True
                next_cursor = _encode_cursor(rows.slice(limit - 1, 1))
        return QueryResult(rows, self._coverage({table: r}, as_of, symbols), truncated, next_cursor)

    def bars(
        self,
        *,
        symbol: str,
        exchange: str | None,
        interval: BarInterval,
        when: TimeRange,
        limit: int,
        as_of: AsOf | None,
    ) -> QueryResult:
        symbols = _check_symbols([symbol])
        if symbols is None:
            raise QueryRejected("bad_parameter", "bars need a symbol")
        start, end, session = _bounds(when)
        width = 0 if interval is BarInterval.DAY_1 else interval.seconds * 1_000_000
        if when.start is None and when.end is None:
            # Whole trading days: history adds up each file's per-bucket partial bars (computed
            # once per immutable file), the live part is aggregated the same way per query.
            live = self._live_part("trades", symbols, start, end, as_of)
            files = [f for f in live.pinned.files if f.may_hold(start, end, symbols)]
            parts = [self._file_partials(f.path, symbol, width) for f in files]
            parts += [self._partials(t, width) for t in live.rows_list if t.num_rows]
            read = live.read
        else:
            read = self._read("trades", symbols, start, end, as_of)
            parts = [self._partials(read.rows, width)]
        parts = [p for p in parts if p.num_rows]
        partials = pa.concat_tables(parts) if parts else self._partials(_TRADE_SLICE.empty_table(), width)
        partials = _filter(partials, exchange, session)
        start_expr = "min(o_ts)" if not width else f"make_timestamptz(any_value(b) * {width})"
        sql = f"""
            SELECT {start_expr} AS bar_start, exchange, any_value(symbol) AS symbol,
                   min(session) AS trading_day,
                   arg_min(o, (o_ts, o_seq)) AS open, max(h) AS high, min(l) AS low,
                   arg_max(c, (c_ts, c_seq)) AS close, CAST(sum(q) AS BIGINT) AS volume,
                   sum(pq) / sum(q) AS vwap, CAST(sum(n) AS BIGINT) AS trades
            FROM p GROUP BY b, exchange ORDER BY bar_start, exchange
        """
        out, truncated = self._run(sql, {"p": partials}, min(limit, self._s.max_rows))
        out = _fix_bars(out, interval)
        return QueryResult(out, self._coverage({"trades": read}, as_of, symbols), truncated)

    def _partials(self, rows: pa.Table, width: int) -> pa.Table:
        """Partial bars of ``rows`` per (exchange, symbol, session, bucket): enough to merge exactly
        with other parts (open/close carry their (ts, seq) to pick the earliest/latest)."""
        bucket = "session" if not width else f"epoch_us(ts) // {width}"
        sql = f"""
            SELECT exchange, symbol, session, {bucket} AS b,
                   arg_min(price, (ts, seq)) AS o, min(ts) AS o_ts, arg_min(seq, (ts, seq)) AS o_seq,
                   arg_max(price, (ts, seq)) AS c, max(ts) AS c_ts, arg_max(seq, (ts, seq)) AS c_seq,
                   max(price) AS h, min(price) AS l, CAST(sum(qty) AS BIGINT) AS q,
                   sum(price * qty) AS pq, count(*) AS n
            FROM t GROUP BY exchange, symbol, session, b
        """
        out, _ = self._run(sql, {"t": rows.select(_TRADE_SLICE.names)}, 10**9)
        return out

    def _file_partials(self, path: str, symbol: str, width: int) -> pa.Table:
        cached = self._cache.get(path)
        key = f"bars:{symbol}:{width}"
        out = cached.memo.get(key)
        if out is None:
            out = cached.memo[key] = self._partials(cached.rows(frozenset([symbol])), width)
        return out

    def vwap(
        self, *, symbols: list[str] | None, exchange: str | None, when: TimeRange, as_of: AsOf | None
    ) -> QueryResult:
        wanted = _check_symbols(symbols)
        start, end, session = _bounds(when)
        live = self._live_part("trades", wanted, start, end, as_of)
        files = [f for f in live.pinned.files if f.may_hold(start, end, wanted)]
        if when.start is None and when.end is None:
            # Whole trading days: history adds up each file's per-day totals (computed once).
            history = [self._cache.get(f.path).totals(wanted) for f in files]
        else:
            history = [trade_totals(self._cache.get(f.path).rows(wanted, start, end)) for f in files]
        parts = [t for t in [*history, *(trade_totals(r) for r in live.rows_list)] if t.num_rows]
        totals = _filter(pa.concat_tables(parts), exchange, session) if parts else trade_totals(None)
        sql = """
            SELECT exchange, symbol, session AS trading_day, sum(pq) / sum(q) AS vwap,
                   CAST(sum(q) AS BIGINT) AS volume, CAST(sum(n) AS BIGINT) AS trades
            FROM t GROUP BY exchange, symbol, session ORDER BY symbol, trading_day, exchange
        """
        out, truncated = self._run(sql, {"t": totals}, self._s.max_rows)
        live.read.rows = totals
        return QueryResult(_fix_days(out), self._coverage({"trades": live.read}, as_of, wanted), truncated)

    def snapshot(self, *, symbols: list[str] | None, exchange: str | None) -> QueryResult:
        wanted = _check_symbols(symbols)
        reads = {t: self._read(t, wanted, None, None, None, "last") for t in ("trades", "quotes")}
        trades = _filter(reads["trades"].rows, exchange, None)
        quotes = _filter(reads["quotes"].rows, exchange, None)
        sql = """
            WITH lt AS (SELECT exchange, symbol, arg_max(price, (ts, seq)) AS last_price,
                               arg_max(qty, (ts, seq)) AS last_qty, max(ts) AS last_trade_ts
                        FROM t GROUP BY exchange, symbol),
                 lq AS (SELECT exchange, symbol, arg_max(bid, (ts, seq)) AS bid,
                               arg_max(ask, (ts, seq)) AS ask, arg_max(bid_size, (ts, seq)) AS bid_size,
                               arg_max(ask_size, (ts, seq)) AS ask_size,
                               max(ts) AS last_quote_ts
                        FROM q GROUP BY exchange, symbol)
            SELECT coalesce(lt.exchange, lq.exchange) AS exchange, coalesce(lt.symbol, lq.symbol) AS symbol,
                   last_price, last_qty, last_trade_ts, bid, ask, bid_size, ask_size, last_quote_ts
            FROM lt FULL OUTER JOIN lq ON lt.exchange = lq.exchange AND lt.symbol = lq.symbol
            ORDER BY symbol, exchange
        """
        out, truncated = self._run(sql, {"t": trades, "q": quotes}, self._s.max_rows)
        return QueryResult(out, self._coverage(reads, None, wanted), truncated)

    def gaps(
        self, *, symbol: str | None, exchange: str | None, status: str | None, limit: int
    ) -> QueryResult:
        symbols = _check_symbols([symbol] if symbol else None)
        gaps = self._gaps_table(None)
        mask = pa.array(np.ones(gaps.num_rows, bool))
        for col, value in (("symbol", symbol), ("exchange", exchange), ("status", status)):
            if value:
                mask = pc.and_(mask, pc.equal(gaps[col], value))
        rows = gaps.filter(mask).sort_by([("detected_at", "ascending"), ("first_seq", "ascending")])
        truncated = rows.num_rows > min(limit, self._s.max_rows)
        rows = rows.slice(0, min(limit, self._s.max_rows))
        pinned = self._history.pin(GAPS_TABLE)
        cov = Coverage(snapshots={GAPS_TABLE: pinned.snapshot_id})
        cov.open_gaps = self._open_gaps(list(MARKET_TABLES), symbols)
        return QueryResult(rows, cov, truncated)

    # -- SQL -----------------------------------------------------------------------------------

    def sql(self, text: str, *, max_rows: int) -> QueryResult:
        statement = self._sandbox.check(text)
        lowered = statement.lower()
        used = [t for t in (*MARKET_TABLES, GAPS_TABLE) if re.search(rf"\b{t}\b", lowered)]
        reads: dict[str, _Read] = {}
        with self._sandbox.session() as cur:
            for name in used:
                if name == GAPS_TABLE:
                    cur.register(name, self._gaps_table(None))
                    continue
                part = self._live_part(name, None, None, None, None)
                reads[name] = part.read
                schema = market_arrow_schema(MARKET_TABLES[name])
                live = [t.select(schema.names).cast(schema) for t in part.rows_list if t.num_rows]
                cur.register(f"{name}__history", self._dataset(part.pinned))
                cur.register(f"{name}__live", pa.concat_tables(live) if live else schema.empty_table())
                cur.execute(
                    f"CREATE OR REPLACE TEMP VIEW {name} AS "
                    f"SELECT * FROM {name}__history UNION ALL BY NAME SELECT * FROM {name}__live"
                )
            rows, truncated = self._sandbox.run(
                cur, statement, max_rows=min(max_rows, self._s.max_rows), timeout_s=self._s.sql_timeout_s
            )
        return QueryResult(_whole_numbers(rows), self._coverage(reads, None, None), truncated)

    def _dataset(self, pinned: PinnedTable) -> ds.Dataset:
        key = (pinned.name, pinned.snapshot_id or 0)
        cached = self._datasets.get(key)
        if cached is not None:
            return cached
        schema = market_arrow_schema(MARKET_TABLES[pinned.name])
        paths = [f.path for f in pinned.files]
        if paths:
            fs, _ = pafs.FileSystem.from_uri(paths[0])
            local = [pafs.FileSystem.from_uri(p)[1] for p in paths]
            dataset = ds.dataset(local, schema=schema, format="parquet", filesystem=fs)
        else:
            dataset = ds.dataset(schema.empty_table())
        if len(self._datasets) > 32:
            self._datasets.clear()
        self._datasets[key] = dataset
        return dataset

    def _run(self, sql: str, tables: dict[str, pa.Table], max_rows: int) -> tuple[pa.Table, bool]:
        with self._sandbox.session() as cur:
            for name, t in tables.items():
                cur.register(name, t)
            return self._sandbox.run(cur, sql, max_rows=max_rows, timeout_s=self._s.sql_timeout_s)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        tables = {}
        for name in (*MARKET_TABLES, GAPS_TABLE):
            pinned = self._history.pin(name)
            tables[name] = {
                "snapshot_id": None if pinned.snapshot_id is None else str(pinned.snapshot_id),
                "files": len(pinned.files),
                "rows": sum(f.rows for f in pinned.files),
                "offsets": {str(p): o for p, o in sorted(pinned.offsets.items())},
            }
        out: dict[str, Any] = {
            "tables": tables,
            "history_cache": {"files": len(self._cache), "bytes": self._cache.nbytes},
            "sandbox": self._sandbox.settings_report(),
        }
        if self._status_source is not None:
            out["ingest"] = self._status_source()
        if self._live is not None:
            out["live_endpoints"] = self._live.ping_all()
        return out

    def ready(self) -> tuple[bool, dict[str, Any]]:
        started = time.perf_counter()
        try:
            self._history.load("trades")
        except NoSuchTableError:
            return True, {"catalog": "ok", "tables": "not created yet (no ingest has run)"}
        except Exception as e:  # the catalog is what readiness means here; say why it failed
            return False, {"catalog": f"{type(e).__name__}: {e}"[:300]}
        return True, {"catalog": "ok", "seconds": round(time.perf_counter() - started, 4)}


def _add_live_facts(cov: Coverage, fetches: list[LiveFetch]) -> None:
    """Endpoints asked and answered, and the highest degradation level among those that answered."""
    if not fetches:
        return
    cov.endpoints_asked = max(len(f.pieces) + len(f.failed) for f in fetches)
    cov.endpoints_answered = min(len(f.pieces) for f in fetches)
    for f in fetches:
        for piece in f.pieces:
            level = piece.process.get("level")
            if isinstance(level, int) and (cov.level is None or level > cov.level):
                cov.level, cov.level_name = level, piece.process.get("level_name")


# The trade columns a bar needs.
_TRADE_SLICE = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("session", pa.int32()),
        ("seq", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("qty", pa.int64()),
    ]
)


def _whole_numbers(rows: pa.Table) -> pa.Table:
    """DuckDB widens ``sum(BIGINT)`` to HUGEINT (Arrow decimal128(38, 0)); give a quant an integer
    when every value fits in int64, as the typed endpoints do, and keep the decimal otherwise."""
    for i, f in enumerate(rows.schema):
        if pa.types.is_decimal(f.type) and f.type.scale == 0:
            try:
                rows = rows.set_column(i, f.name, rows.column(i).cast(pa.int64()))
            except pa.ArrowInvalid:  # a value past int64: the exact decimal stays
                continue
    return rows


def _filter(rows: pa.Table, exchange: str | None, session: int | None) -> pa.Table:
    mask = None
    if exchange:
        mask = pc.equal(rows["exchange"], exchange)
    if session is not None:
        m = pc.equal(rows["session"], session)
        mask = m if mask is None else pc.and_(mask, m)
    return rows if mask is None else rows.filter(mask)


def _fix_days(t: pa.Table) -> pa.Table:
    """``trading_day`` as a date (the session number is YYYYMMDD of the exchange's date)."""
    if "trading_day" not in t.column_names:
        return t
    days = [
        None if v is None else date(v // 10_000, v // 100 % 100, v % 100)
        for v in t["trading_day"].to_pylist()
    ]
    return t.set_column(t.schema.get_field_index("trading_day"), "trading_day", pa.array(days, pa.date32()))


def _fix_bars(t: pa.Table, interval: BarInterval) -> pa.Table:
    t = _fix_days(t)
    i = t.schema.get_field_index("bar_start")
    if i >= 0:
        t = t.set_column(i, "bar_start", t["bar_start"].cast(pa.timestamp("us", tz="UTC")))
    return t.append_column("interval", pa.array([interval.value] * t.num_rows, pa.string()))


def _encode_cursor(last: pa.Table) -> str:
    ts = last["ts"].cast(pa.int64())[0].as_py()
    return f"{ts}.{last['kafka_partition'][0].as_py()}.{last['kafka_offset'][0].as_py()}"


def _decode_cursor(cursor: str) -> tuple[int, int, int]:
    try:
        ts, p, o = (int(x) for x in cursor.split("."))
    except ValueError:
        raise QueryRejected("bad_parameter", "cursor is not one this API gave out") from None
    return ts, p, o


def _after(rows: pa.Table, key: tuple[int, int, int]) -> pa.Table:
    ts = rows["ts"].cast(pa.int64()).to_numpy()
    p = rows["kafka_partition"].to_numpy()
    o = rows["kafka_offset"].to_numpy()
    c_ts, c_p, c_o = key
    later = (ts > c_ts) | ((ts == c_ts) & ((p > c_p) | ((p == c_p) & (o > c_o))))
    return rows.filter(pa.array(later))


def open_engine(settings: Settings) -> Engine:
    """The engine as ``k2 api`` runs it: the configured catalog, the history cache, every live
    endpoint advertised in the status directory (plus ``live.endpoints``), the sandbox."""
    from k2.ingest.parts import stream_of_topic
    from k2.ingest.status import read_statuses
    from k2.lake import open_catalog
    from k2.lake.tables import TABLE_FOR_STREAM

    catalog = open_catalog(settings.iceberg)
    topic_of = {TABLE_FOR_STREAM[s]: t for t, s in stream_of_topic(settings.kafka.topics).items()}
    history = History(catalog, settings.iceberg.namespace, topic_of)
    io_props = dict(catalog.properties)

    def opener(path: str) -> Any:
        return load_file_io(io_props, path).new_input(path).open()

    cache = FileCache(opener, settings.api.history_cache_bytes)
    live = None
    if settings.live.enabled:
        status_dir = settings.ingest.status_dir
        live = LiveClient(
            settings.live,
            lambda: endpoints_from_status(
                status_dir, settings.live.endpoints, settings.live.stale_after_s, time.time()
            ),
        )

    def statuses() -> list[dict[str, Any]]:
        return [asdict(s) for s in read_statuses(settings.ingest.status_dir)]

    return Engine(history, cache, live, Sandbox(settings.api), settings.api, topic_of, statuses)
