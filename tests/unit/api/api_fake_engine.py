"""A ``Queries`` engine (and a manual clock) for API tests: small realistic Arrow tables, every call recorded.

``fail[method] = exc`` makes that method raise; ``gate`` (a ``threading.Event``) makes trades
block until it is set, to show a slow query does not stall the server.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from k2.query.result import Coverage, DeferredRange, QueryResult
from k2.query.spec import AsOf, BarInterval, TimeRange

SNAPSHOT_ID = 4586712930015577412  # > 2**53: a JSON double would round it
BIG_SEQ = 2**53 + 1

TRADE_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("session", pa.date32()),
        ("seq", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("qty", pa.int64()),
        ("conditions", pa.list_(pa.string())),
        ("trade_id", pa.string()),
        ("venue", pa.string()),
        ("ingest_ts", pa.timestamp("us", tz="UTC")),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)
QUOTE_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("session", pa.date32()),
        ("seq", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("bid", pa.float64()),
        ("ask", pa.float64()),
        ("bid_size", pa.int64()),
        ("ask_size", pa.int64()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)
BAR_SCHEMA = pa.schema(
    [
        ("bar_start", pa.timestamp("us", tz="UTC")),
        ("trading_day", pa.date32()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("vwap", pa.float64()),
        ("trades", pa.int64()),
    ]
)


def _ts(second: int, micro: int = 0) -> datetime:
    return datetime(2014, 3, 11, 0, 0, second, micro, tzinfo=UTC)


def trades_table() -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "exchange": "ASX",
                "symbol": "BHP",
                "session": date(2014, 3, 11),
                "seq": 10452,
                "ts": _ts(1, 250_000),
                "price": 36.52,
                "qty": 500,
                "conditions": ["XT"],
                "trade_id": "BHP-10452",
                "venue": "ASX",
                "ingest_ts": _ts(1, 251_900),
                "kafka_partition": 3,
                "kafka_offset": 1187,
            },
            {
                "exchange": "ASX",
                "symbol": "BHP",
                "session": date(2014, 3, 11),
                "seq": BIG_SEQ,
                "ts": _ts(2),
                "price": 36.53,
                "qty": 120,
                "conditions": [],
                "trade_id": "BHP-10453",
                "venue": "CXA",
                "ingest_ts": _ts(2, 900),
                "kafka_partition": 3,
                "kafka_offset": 1188,
            },
            {
                "exchange": "ASX",
                "symbol": "BHP",
                "session": date(2014, 3, 11),
                "seq": 10454,
                "ts": _ts(3, 1),
                "price": 36.51,
                "qty": 1_000,
                "conditions": ["XT", "S"],
                "trade_id": None,
                "venue": "ASX",
                "ingest_ts": _ts(3, 2),
                "kafka_partition": 3,
                "kafka_offset": 1189,
            },
        ],
        schema=TRADE_SCHEMA,
    )


def quotes_table() -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "exchange": "ASX",
                "symbol": "BHP",
                "session": date(2014, 3, 11),
                "seq": 20001,
                "ts": _ts(1),
                "bid": 36.51,
                "ask": 36.53,
                "bid_size": 1_200,
                "ask_size": 800,
                "kafka_partition": 1,
                "kafka_offset": 77,
            }
        ],
        schema=QUOTE_SCHEMA,
    )


def bars_table() -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "bar_start": datetime(2014, 3, 11, 0, 0, tzinfo=UTC),
                "trading_day": date(2014, 3, 11),
                "open": 36.50,
                "high": 36.58,
                "low": 36.47,
                "close": 36.52,
                "volume": 182_400,
                "vwap": 36.5231,
                "trades": 214,
            },
            {
                "bar_start": datetime(2014, 3, 11, 0, 1, tzinfo=UTC),
                "trading_day": date(2014, 3, 11),
                "open": 36.52,
                "high": 36.52,
                "low": 36.52,
                "close": 36.52,
                "volume": 0,
                "vwap": float("nan"),  # no volume: no VWAP
                "trades": 0,
            },
        ],
        schema=BAR_SCHEMA,
    )


def coverage(as_of: AsOf | None = None) -> Coverage:
    return Coverage(
        snapshots={"trades": SNAPSHOT_ID, "quotes": None},
        live_from={} if as_of else {"trades": {3: 1187}},
        live_missing=[] if as_of else ["trades/4"],
        endpoints_asked=0 if as_of else 2,
        endpoints_answered=0 if as_of else 1,
        level=0,
        level_name="NORMAL",
        deferred=[DeferredRange("market.trades", 4, 100, 180)],
        open_gaps=1,
        as_of=str(as_of) if as_of else None,
    )


class ManualClock:
    """Monotonic seconds that move only when a test moves them (``clock.now += 2``)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, BaseException] = {}
        self.gate: threading.Event | None = None
        self.is_ready = True
        self.empty = False  # trades answer no rows

    def _record(self, method: str, **kwargs: Any) -> None:
        self.calls.append((method, kwargs))
        if method in self.fail:
            raise self.fail[method]

    @property
    def last_call(self) -> tuple[str, dict[str, Any]]:
        return self.calls[-1]

    def trades(
        self,
        *,
        symbol: str | None,
        exchange: str | None,
        when: TimeRange,
        last: int | None,
        limit: int,
        cursor: str | None,
        as_of: AsOf | None,
    ) -> QueryResult:
        self._record(
            "trades",
            symbol=symbol,
            exchange=exchange,
            when=when,
            last=last,
            limit=limit,
            cursor=cursor,
            as_of=as_of,
        )
        if self.gate is not None:
            self.gate.wait(10)
        rows = trades_table().slice(0, 0) if self.empty else trades_table()
        if last is not None:
            rows = rows.slice(max(0, rows.num_rows - last))
        truncated = rows.num_rows > limit
        return QueryResult(
            rows.slice(0, limit),
            coverage(as_of),
            truncated=truncated,
            next_cursor="c2VxPTEwNDUz" if truncated else None,
        )

    def quotes(
        self,
        *,
        symbol: str | None,
        exchange: str | None,
        when: TimeRange,
        last: int | None,
        limit: int,
        cursor: str | None,
        as_of: AsOf | None,
    ) -> QueryResult:
        self._record(
            "quotes",
            symbol=symbol,
            exchange=exchange,
            when=when,
            last=last,
            limit=limit,
            cursor=cursor,
            as_of=as_of,
        )
        return QueryResult(quotes_table(), coverage(as_of))

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
        self._record(
            "bars", symbol=symbol, exchange=exchange, interval=interval, when=when, limit=limit, as_of=as_of
        )
        return QueryResult(bars_table().slice(0, limit), coverage(as_of))

    def vwap(
        self, *, symbols: list[str] | None, exchange: str | None, when: TimeRange, as_of: AsOf | None
    ) -> QueryResult:
        self._record("vwap", symbols=symbols, exchange=exchange, when=when, as_of=as_of)
        rows = pa.table(
            {
                "symbol": pa.array(symbols or ["BHP"]),
                "trading_day": pa.array([date(2014, 3, 11)] * len(symbols or ["BHP"]), pa.date32()),
                "vwap": pa.array([36.5172] * len(symbols or ["BHP"])),
                "volume": pa.array([4_120_300] * len(symbols or ["BHP"]), pa.int64()),
            }
        )
        return QueryResult(rows, coverage(as_of))

    def snapshot(self, *, symbols: list[str] | None, exchange: str | None) -> QueryResult:
        self._record("snapshot", symbols=symbols, exchange=exchange)
        rows = pa.table(
            {
                "symbol": ["BHP"],
                "last_price": [36.51],
                "last_ts": pa.array([_ts(3)], pa.timestamp("us", tz="UTC")),
                "bid": [36.51],
                "ask": [36.53],
            }
        )
        return QueryResult(rows, coverage())

    def gaps(
        self, *, symbol: str | None, exchange: str | None, status: str | None, limit: int
    ) -> QueryResult:
        self._record("gaps", symbol=symbol, exchange=exchange, status=status, limit=limit)
        rows = pa.table(
            {
                "exchange": ["ASX"],
                "symbol": ["BHP"],
                "first_missing_seq": pa.array([10455], pa.int64()),
                "last_missing_seq": pa.array([10460], pa.int64()),
                "detected_at": pa.array([_ts(5)], pa.timestamp("us", tz="UTC")),
                "status": ["open"],
            }
        )
        return QueryResult(rows, coverage())

    def sql(self, text: str, *, max_rows: int) -> QueryResult:
        self._record("sql", text=text, max_rows=max_rows)
        rows = trades_table().select(["symbol", "qty", "price"])
        truncated = rows.num_rows > max_rows
        return QueryResult(rows.slice(0, max_rows), coverage(), truncated=truncated)

    def status(self) -> dict[str, Any]:
        self._record("status")
        return {
            "ingest": [{"process": 0, "level": "NORMAL", "lag": 12, "ratio": float("nan")}],
            "tables": {"trades": {"snapshot_id": SNAPSHOT_ID, "updated": _ts(9)}},
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self.is_ready, {"catalog": self.is_ready}
