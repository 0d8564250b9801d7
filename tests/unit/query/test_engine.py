"""The hybrid engine over a real Iceberg warehouse (SQLite catalog) and a fake live side.

Every expected value is computed in plain Python from the same row dicts the tables were built
from, never taken from the engine's own output.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from engine_fixtures import (
    SECOND,
    T0,
    FakeLive,
    Lake,
    Row,
    build_engine,
    key,
    micros,
    next_offsets,
    quote,
    trade,
)

from k2.deferred_ledger import DeferredLedger
from k2.errors import QueryRejected
from k2.query.engine import Engine
from k2.query.history import History, PinnedTable
from k2.query.result import DeferredRange, QueryResult
from k2.query.spec import AsOf, BarInterval, TimeRange
from k2.sequence_tracker import Gap

HOUR = 3600 * SECOND
# ASX sessions (AEDT, UTC+11): 10:00-16:00 Sydney is 23:00 (previous UTC day) to 05:00 UTC.
SESSIONS = {20260310: T0 - 24 * HOUR, 20260311: T0, 20260312: T0 + 24 * HOUR}
SYMBOLS = ("BHP", "CBA", "RIO")


def _utc(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _tape() -> list[Row]:
    """Three ASX sessions of trades, in ts order, over two partitions, with ties in ts across
    partitions (a 3-minute grid) so that (ts, partition, offset) ordering is exercised."""
    rng = random.Random(20260311)
    events = []
    for session, open_us in SESSIONS.items():
        for _ in range(45):
            events.append((open_us + rng.randrange(0, 120) * 180 * SECOND, session, rng.choice(SYMBOLS)))
    events.sort(key=lambda e: e[0])
    next_offset = {0: 0, 1: 0}
    seq: dict[tuple[str, int], int] = defaultdict(int)
    rows = []
    for ts, session, symbol in events:
        p = rng.randrange(2)
        seq[(symbol, session)] += 1
        price = round(rng.uniform(30, 50), 2)
        rows.append(
            trade(
                symbol,
                ts,
                p,
                next_offset[p],
                price,
                rng.randrange(1, 900),
                session=session,
                seq=seq[(symbol, session)],
            )
        )
        next_offset[p] += 1
    return rows


def _quotes() -> list[Row]:
    rng = random.Random(5)
    rows = []
    for i in range(60):
        symbol = SYMBOLS[i % 3]
        bid = round(rng.uniform(30, 50), 2)
        rows.append(quote(symbol, T0 + i * 7 * SECOND, 0, i, bid, bid + 0.01 * (1 + i % 4), seq=i + 1))
    return rows


TAPE = _tape()
QUOTES = _quotes()
# Not sorted by symbol (the committer writes them in stream order): the cache must cope.
GAPS = [
    ("trades", Gap("ASX", "CBA", 20260311, 4, 6, T0 + 2 * SECOND, "filled", T0 + 3 * SECOND)),
    ("trades", Gap("ASX", "BHP", 20260311, 10, 12, T0 + 5 * SECOND, "open")),
    ("trades", Gap("ASX", "BHP", 20260311, 30, 30, T0 + 9 * SECOND, "open")),
    ("quotes", Gap("ASX", "RIO", 20260311, 7, 7, T0 + 4 * SECOND, "open")),
]


@pytest.fixture(scope="module")
def history_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """The tape in three commits (each spans UTC days, so several files per commit)."""
    lake = Lake.create(tmp_path_factory.mktemp("history") / "wh")
    third = len(TAPE) // 3
    for chunk in (TAPE[:third], TAPE[third : 2 * third], TAPE[2 * third :]):
        lake.commit("trades", chunk)
    lake.commit("quotes", QUOTES)
    lake.write_gaps(GAPS)
    yield lake
    lake.close()


@pytest.fixture(scope="module")
def history_engine(history_lake: Lake) -> Engine:
    return build_engine(history_lake, None)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    lake = Lake.create(tmp_path / "wh")
    yield lake
    lake.close()


def _trades(engine: Engine, **kw: Any) -> QueryResult:
    args: dict[str, Any] = {
        "symbol": None,
        "exchange": None,
        "when": TimeRange(),
        "last": None,
        "limit": 100_000,
        "cursor": None,
        "as_of": None,
    }
    return engine.trades(**{**args, **kw})


def _keys(result: QueryResult) -> list[tuple[int, int, int]]:
    return [key(r) for r in result.rows.select(["ts", "kafka_partition", "kafka_offset"]).to_pylist()]


def _sorted_keys(rows: list[Row]) -> list[tuple[int, int, int]]:
    return sorted(key(r) for r in rows)


# -- history only ------------------------------------------------------------------------------


def test_the_tape_has_ties_across_partitions() -> None:
    by_ts = defaultdict(set)
    for r in TAPE:
        by_ts[r["ts"]].add(r["kafka_partition"])
    assert any(len(ps) == 2 for ps in by_ts.values())  # the ordering tests below mean something


@pytest.mark.parametrize("n", [1, 7, 40, len(TAPE)])
def test_last_n_trades_are_the_newest_by_ts_partition_offset_oldest_first(
    history_engine: Engine, n: int
) -> None:
    result = _trades(history_engine, last=n)
    assert _keys(result) == _sorted_keys(TAPE)[-n:]


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_last_n_trades_of_one_symbol(history_engine: Engine, symbol: str) -> None:
    mine = [r for r in TAPE if r["symbol"] == symbol]
    result = _trades(history_engine, symbol=symbol, last=9)
    assert _keys(result) == _sorted_keys(mine)[-9:]
    assert set(result.rows["symbol"].to_pylist()) == {symbol}


def test_last_n_with_a_day_is_the_newest_n_of_that_session(history_engine: Engine) -> None:
    day = [r for r in TAPE if r["session"] == 20260311]
    result = _trades(history_engine, when=TimeRange(day=date(2026, 3, 11)), last=5)
    assert _keys(result) == _sorted_keys(day)[-5:]


def test_range_query_is_start_inclusive_end_exclusive(history_engine: Engine) -> None:
    start, end = T0 + HOUR, T0 + 2 * HOUR + 30 * SECOND
    result = _trades(history_engine, symbol="BHP", when=TimeRange(start=_utc(start), end=_utc(end)))
    wanted = [r for r in TAPE if r["symbol"] == "BHP" and start <= r["ts"] < end]
    assert _keys(result) == _sorted_keys(wanted)
    assert not result.truncated


def test_range_query_bounds_hold_to_the_microsecond(history_engine: Engine) -> None:
    ts = TAPE[50]["ts"]
    at = _utc(ts)
    exact = [r for r in TAPE if r["ts"] == ts]
    assert _keys(_trades(history_engine, when=TimeRange(start=at, end=at + timedelta(microseconds=1)))) == (
        _sorted_keys(exact)
    )
    after = _trades(
        history_engine, when=TimeRange(start=at + timedelta(microseconds=1), end=at + 2 * at.resolution)
    )
    assert after.rows.num_rows == 0


def test_cursor_paging_walks_every_row_exactly_once(history_engine: Engine) -> None:
    seen: list[tuple[int, int, int]] = []
    cursor = None
    pages = 0
    while True:
        page = _trades(history_engine, limit=7, cursor=cursor)
        pages += 1
        seen += _keys(page)
        assert page.rows.num_rows <= 7
        if page.next_cursor is None:
            assert not page.truncated
            break
        assert page.truncated and page.rows.num_rows == 7
        cursor = page.next_cursor
    assert seen == _sorted_keys(TAPE)
    assert pages == -(-len(TAPE) // 7)


def test_a_forged_cursor_is_refused(history_engine: Engine) -> None:
    with pytest.raises(QueryRejected) as err:
        _trades(history_engine, limit=5, cursor="not-a-cursor")
    assert err.value.reason == "bad_parameter"


def test_day_is_the_exchange_session_even_across_two_utc_days(history_engine: Engine) -> None:
    day = [r for r in TAPE if r["session"] == 20260311]
    utc_days = {_utc(r["ts"]).date() for r in day}
    assert utc_days == {date(2026, 3, 10), date(2026, 3, 11)}  # the session spans two UTC days
    result = _trades(history_engine, when=TimeRange(day=date(2026, 3, 11)))
    assert _keys(result) == _sorted_keys(day)
    assert set(result.rows["session"].to_pylist()) == {20260311}
    # The UTC calendar day 2026-03-11 would have mixed two sessions: the filter is not by UTC date.
    utc_day = [r for r in TAPE if _utc(r["ts"]).date() == date(2026, 3, 11)]
    assert {r["session"] for r in utc_day} == {20260311, 20260312}


# -- bars, VWAP, snapshot, gaps ----------------------------------------------------------------


def _expected_bars(rows: list[Row], interval: BarInterval) -> list[dict[str, Any]]:
    groups: dict[Any, list[Row]] = defaultdict(list)
    for r in rows:
        b = r["session"] if interval is BarInterval.DAY_1 else r["ts"] // (interval.seconds * SECOND)
        groups[b].append(r)
    out = []
    for b, g in groups.items():
        g.sort(key=lambda r: (r["ts"], r["seq"]))
        volume = sum(r["qty"] for r in g)
        start = g[0]["ts"] if interval is BarInterval.DAY_1 else b * interval.seconds * SECOND
        out.append(
            {
                "bar_start": start,
                "trading_day": date(
                    g[0]["session"] // 10_000, g[0]["session"] // 100 % 100, g[0]["session"] % 100
                ),
                "open": g[0]["price"],
                "high": max(r["price"] for r in g),
                "low": min(r["price"] for r in g),
                "close": g[-1]["price"],
                "volume": volume,
                "vwap": sum(r["price"] * r["qty"] for r in g) / volume,
                "trades": len(g),
            }
        )
    return sorted(out, key=lambda b: b["bar_start"])


@pytest.mark.parametrize("interval", list(BarInterval))
def test_bars_match_an_independent_ohlcv(history_engine: Engine, interval: BarInterval) -> None:
    result = history_engine.bars(
        symbol="CBA", exchange=None, interval=interval, when=TimeRange(), limit=100_000, as_of=None
    )
    assert result.rows.schema.field("volume").type == pa.int64()  # shares, not a decimal
    got = result.rows.to_pylist()
    want = _expected_bars([r for r in TAPE if r["symbol"] == "CBA"], interval)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert micros(g["bar_start"]) == w["bar_start"]
        assert g["trading_day"] == w["trading_day"]
        assert (g["open"], g["high"], g["low"], g["close"]) == (w["open"], w["high"], w["low"], w["close"])
        assert g["volume"] == w["volume"] and g["trades"] == w["trades"]
        assert g["vwap"] == pytest.approx(w["vwap"], rel=1e-12)
        assert g["symbol"] == "CBA" and g["interval"] == interval.value


def test_day_bars_of_one_session_cover_it_across_utc_midnight(history_engine: Engine) -> None:
    result = history_engine.bars(
        symbol="BHP",
        exchange=None,
        interval=BarInterval.DAY_1,
        when=TimeRange(day=date(2026, 3, 11)),
        limit=10,
        as_of=None,
    )
    want = _expected_bars(
        [r for r in TAPE if r["symbol"] == "BHP" and r["session"] == 20260311], BarInterval.DAY_1
    )
    assert len(want) == 1
    (got,) = result.rows.to_pylist()
    assert got["trades"] == want[0]["trades"] and got["volume"] == want[0]["volume"]
    assert (got["open"], got["close"]) == (want[0]["open"], want[0]["close"])


def test_vwap_per_symbol_and_session(history_engine: Engine) -> None:
    result = history_engine.vwap(symbols=["BHP", "RIO"], exchange=None, when=TimeRange(), as_of=None)
    groups: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in TAPE:
        if r["symbol"] in ("BHP", "RIO"):
            groups[(r["symbol"], r["session"])].append(r)
    assert result.rows.schema.field("volume").type == pa.int64()
    got = {(g["symbol"], g["trading_day"]): g for g in result.rows.to_pylist()}
    assert len(got) == len(groups)
    for (symbol, session), rows in groups.items():
        g = got[(symbol, date(session // 10_000, session // 100 % 100, session % 100))]
        volume = sum(r["qty"] for r in rows)
        assert g["vwap"] == pytest.approx(sum(r["price"] * r["qty"] for r in rows) / volume, rel=1e-12)
        assert g["volume"] == volume and g["trades"] == len(rows)


def test_snapshot_is_the_last_trade_and_quote_per_symbol(history_engine: Engine) -> None:
    result = history_engine.snapshot(symbols=None, exchange=None)
    got = {r["symbol"]: r for r in result.rows.to_pylist()}
    assert sorted(got) == sorted(SYMBOLS)
    for symbol in SYMBOLS:
        last_trade = max((r for r in TAPE if r["symbol"] == symbol), key=lambda r: (r["ts"], r["seq"]))
        last_quote = max((r for r in QUOTES if r["symbol"] == symbol), key=lambda r: (r["ts"], r["seq"]))
        g = got[symbol]
        assert (g["last_price"], g["last_qty"]) == (last_trade["price"], last_trade["qty"])
        assert micros(g["last_trade_ts"]) == last_trade["ts"]
        assert (g["bid"], g["ask"]) == (last_quote["bid"], last_quote["ask"])
        assert micros(g["last_quote_ts"]) == last_quote["ts"]


def test_gaps_lists_the_ledger_and_counts_open_ones(history_engine: Engine) -> None:
    result = history_engine.gaps(symbol="BHP", exchange=None, status=None, limit=100)
    assert [(r["first_seq"], r["last_seq"], r["status"]) for r in result.rows.to_pylist()] == [
        (10, 12, "open"),
        (30, 30, "open"),
    ]
    assert result.coverage.open_gaps == 2
    opened = history_engine.gaps(symbol=None, exchange=None, status="open", limit=100)
    assert sorted(r["symbol"] for r in opened.rows.to_pylist()) == ["BHP", "BHP", "RIO"]
    filled = history_engine.gaps(symbol=None, exchange=None, status="filled", limit=100)
    assert [r["symbol"] for r in filled.rows.to_pylist()] == ["CBA"]


def test_coverage_counts_the_open_gaps_of_the_symbols_and_table_read(history_engine: Engine) -> None:
    assert _trades(history_engine, symbol="BHP", last=1).coverage.open_gaps == 2
    cba = _trades(history_engine, symbol="CBA", last=1).coverage
    assert cba.open_gaps == 0 and cba.complete
    assert _trades(history_engine, symbol="RIO", last=1).coverage.open_gaps == 0  # its gap is in quotes
    assert history_engine.snapshot(symbols=["RIO"], exchange=None).coverage.open_gaps == 1


def test_history_coverage_names_the_snapshot(history_engine: Engine, history_lake: Lake) -> None:
    current = history_lake.writers["trades"].table.current_snapshot()
    assert current is not None
    cov = _trades(history_engine, last=1).coverage
    assert cov.snapshots == {"trades": current.snapshot_id}
    assert cov.live_from == {} and cov.live_missing == [] and cov.as_of is None


# -- bad parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BHP'; DROP TABLE trades; --", "B HP", 'a"b', "x" * 33, "BHP)--"])
def test_a_symbol_with_sql_metacharacters_is_refused(history_engine: Engine, symbol: str) -> None:
    with pytest.raises(QueryRejected) as err:
        _trades(history_engine, symbol=symbol)
    assert err.value.reason == "bad_parameter"
    with pytest.raises(QueryRejected):
        history_engine.vwap(symbols=["BHP", symbol], exchange=None, when=TimeRange(), as_of=None)


def test_an_empty_or_backwards_range_is_refused() -> None:
    at = _utc(T0)
    for end in (at, at - timedelta(seconds=1)):
        with pytest.raises(QueryRejected) as err:
            TimeRange(start=at, end=end)
        assert err.value.reason == "bad_parameter"


@pytest.mark.parametrize("last", [0, -1, 100_001])
def test_last_outside_one_to_max_rows_is_refused(history_engine: Engine, last: int) -> None:
    with pytest.raises(QueryRejected) as err:
        _trades(history_engine, last=last)
    assert err.value.reason == "bad_parameter"


# -- hybrid: history ∪ live --------------------------------------------------------------------


def _seq_trades(p: int, offsets: range, symbol: str = "BHP", t: int = T0) -> list[Row]:
    """Trades of one partition, one per second (ts follows offset, as for a real feed)."""
    return [trade(symbol, t + (o * 2 + p) * SECOND, p, o, 40.0 + o / 100, 10 + o) for o in offsets]


def test_hybrid_takes_each_row_once_from_history_or_the_buffers(lake: Lake) -> None:
    history = _seq_trades(0, range(0, 20)) + _seq_trades(1, range(0, 12))
    lake.commit("trades", history)  # S = {0: 20, 1: 12}
    live = FakeLive()
    # Endpoint a still holds rows below S (in flight, released after the commit) and rows from S on.
    live.add("trades", "grpc://a", _seq_trades(0, range(17, 26)), {0: (17, 26)})
    # Partition 1 moved from b (never committed, a zombie) to c, which re-read from S: they overlap.
    live.add("trades", "grpc://b", _seq_trades(1, range(12, 16)), {1: (12, 16)})
    live.add("trades", "grpc://c", _seq_trades(1, range(12, 19)), {1: (12, 19)})
    engine = build_engine(lake, live)
    result = _trades(engine)
    everything = _seq_trades(0, range(0, 26)) + _seq_trades(1, range(0, 19))
    assert _keys(result) == _sorted_keys(everything)
    assert result.coverage.live_from == {"trades": {0: 20, 1: 12}}
    assert result.coverage.endpoints_asked == 3 and result.coverage.endpoints_answered == 3
    assert result.coverage.complete
    # The same through SQL: the view is history ∪ live.
    sql = engine.sql(
        "SELECT count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS d FROM trades", max_rows=10
    )
    assert sql.rows.to_pylist() == [{"n": len(everything), "d": len(everything)}]
    assert sql.coverage.live_from == {"trades": {0: 20, 1: 12}}


def test_last_n_reaches_into_history_when_the_buffers_hold_fewer(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 30)))
    live = FakeLive()
    live.add("trades", "grpc://a", _seq_trades(0, range(30, 33)), {0: (30, 33)})
    result = _trades(build_engine(lake, live), symbol="BHP", last=10)
    assert _keys(result) == _sorted_keys(_seq_trades(0, range(23, 33)))


def test_a_failed_endpoint_is_named_and_the_rest_still_answers(lake: Lake) -> None:
    lake.commit(
        "trades", _seq_trades(0, range(0, 10)) + _seq_trades(1, range(0, 10)) + _seq_trades(2, range(5))
    )
    live = FakeLive()
    live.add("trades", "grpc://a", _seq_trades(0, range(10, 14)), {0: (10, 14)})
    live.add(
        "trades",
        "grpc://b",
        _seq_trades(1, range(10, 12)) + _seq_trades(2, range(5, 6)),
        {1: (10, 12), 2: (5, 6)},
    )
    engine = build_engine(lake, live)
    first = _trades(engine)
    assert first.coverage.live_missing == [] and first.rows.num_rows == 14 + 12 + 6
    live.failed["grpc://b"] = "FlightUnavailableError: connection refused"
    second = _trades(engine)
    assert second.coverage.live_missing == [
        "trades/1 (grpc://b: FlightUnavailableError: connection refused)",
        "trades/2 (grpc://b: FlightUnavailableError: connection refused)",
    ]
    assert not second.coverage.complete
    want = _seq_trades(0, range(14)) + _seq_trades(1, range(10)) + _seq_trades(2, range(5))
    assert _keys(second) == _sorted_keys(want)
    assert (second.coverage.endpoints_asked, second.coverage.endpoints_answered) == (2, 1)


def test_an_endpoint_never_seen_is_missing_with_unknown_partitions(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 4)))
    live = FakeLive(failed={"grpc://new": "breaker open"})
    result = _trades(build_engine(lake, live))
    assert result.rows.num_rows == 4
    assert len(result.coverage.live_missing) == 1
    assert "grpc://new" in result.coverage.live_missing[0] and "unknown" in result.coverage.live_missing[0]


def test_a_commit_between_the_buffer_read_and_the_pin_is_neither_lost_nor_doubled(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 10)))
    live = FakeLive()
    live.add("trades", "grpc://a", _seq_trades(0, range(10, 18)), {0: (10, 18)})
    committed: list[int] = []

    def commit_during_fetch(table: str) -> None:
        if table == "trades" and not committed:
            committed.append(lake.commit("trades", _seq_trades(0, range(10, 15))))

    live.before_return = commit_during_fetch
    result = _trades(build_engine(lake, live))
    assert _keys(result) == _sorted_keys(_seq_trades(0, range(0, 18)))
    assert result.coverage.snapshots == {"trades": committed[0]}
    assert result.coverage.live_from == {"trades": {0: 15}}


class _LaggingHistory(History):
    """A catalog replica that lags: the first pin of each table returns the snapshot before."""

    def __init__(self, *args: Any, lag_to: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._lag_to = lag_to
        self.pins = 0

    def pin(self, name: str, as_of: AsOf | None = None) -> PinnedTable:
        self.pins += 1
        if name == "trades" and as_of is None and self.pins == 1:
            return super().pin(name, AsOf(snapshot_id=self._lag_to))
        return super().pin(name, as_of)


def test_a_stale_snapshot_is_re_pinned_and_the_answer_is_exact(lake: Lake) -> None:
    old = lake.commit("trades", _seq_trades(0, range(0, 10)))
    new = lake.commit("trades", _seq_trades(0, range(10, 15)))
    live = FakeLive()
    # The buffer already released [10, 15): the stale snapshot (S[0] = 10) would miss them.
    live.add("trades", "grpc://a", _seq_trades(0, range(15, 20)), {0: (15, 20)})
    engine = build_engine(lake, live)
    lagging = _LaggingHistory(lake.catalog, lake.cfg.namespace, {"trades": "trades"}, lag_to=old)
    engine._history = lagging
    result = _trades(engine)
    assert lagging.pins >= 2
    assert _keys(result) == _sorted_keys(_seq_trades(0, range(0, 20)))
    assert result.coverage.snapshots["trades"] == new
    assert result.coverage.live_missing == []


def test_rows_neither_place_holds_are_named_not_silently_dropped(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 10)))
    live = FakeLive()
    # The buffer claims [0, 14) is in Iceberg, but no snapshot has [10, 14).
    live.add("trades", "grpc://a", _seq_trades(0, range(14, 16)), {0: (14, 16)})
    result = _trades(build_engine(lake, live))
    assert result.coverage.live_missing == ["trades/0: offsets 10..13"]
    assert not result.coverage.complete


def test_live_rows_filtered_at_the_source_by_symbol_and_time(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 5)))
    live = FakeLive()
    rows = _seq_trades(0, range(5, 10)) + _seq_trades(1, range(0, 5), symbol="CBA")
    live.add("trades", "grpc://a", rows, {0: (5, 10), 1: (0, 5)})
    start, end = _utc(T0 + 12 * SECOND), _utc(T0 + 17 * SECOND)
    result = _trades(build_engine(lake, live), symbol="BHP", when=TimeRange(start=start, end=end))
    everything = _seq_trades(0, range(0, 10))
    want = [r for r in everything if micros(start) <= r["ts"] < micros(end)]
    assert _keys(result) == _sorted_keys(want)
    assert live.calls[-1] == ("trades", ("BHP",), micros(start), micros(end))


def test_hybrid_bars_and_vwap_count_each_trade_once(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 40)))
    live = FakeLive()
    live.add("trades", "grpc://a", _seq_trades(0, range(35, 70)), {0: (35, 70)})
    live.add("trades", "grpc://b", _seq_trades(0, range(40, 60)), {0: (40, 60)})
    engine = build_engine(lake, live)
    everything = _seq_trades(0, range(0, 70))
    bars = engine.bars(
        symbol="BHP", exchange=None, interval=BarInterval.MINUTE_1, when=TimeRange(), limit=100, as_of=None
    )
    want = _expected_bars(everything, BarInterval.MINUTE_1)
    assert [(micros(b["bar_start"]), b["trades"], b["volume"]) for b in bars.rows.to_pylist()] == [
        (w["bar_start"], w["trades"], w["volume"]) for w in want
    ]
    (v,) = engine.vwap(symbols=["BHP"], exchange=None, when=TimeRange(), as_of=None).rows.to_pylist()
    volume = sum(r["qty"] for r in everything)
    assert v["trades"] == 70 and v["volume"] == volume
    assert v["vwap"] == pytest.approx(sum(r["price"] * r["qty"] for r in everything) / volume, rel=1e-12)


def test_snapshot_takes_live_trades_and_quotes(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(0, 5)))
    lake.commit("quotes", [quote("BHP", T0 + i * SECOND, 0, i, 40.0 + i, 40.5 + i) for i in range(3)])
    live = FakeLive()
    live.add("trades", "grpc://a", _seq_trades(0, range(5, 8)), {0: (5, 8)})
    live.add("quotes", "grpc://a", [quote("BHP", T0 + 10 * SECOND, 0, 3, 50.0, 50.25)], {0: (3, 4)})
    (row,) = build_engine(lake, live).snapshot(symbols=["BHP"], exchange=None).rows.to_pylist()
    last = _seq_trades(0, range(7, 8))[0]
    assert (row["last_price"], row["last_qty"], micros(row["last_trade_ts"])) == (
        last["price"],
        last["qty"],
        last["ts"],
    )
    assert (row["bid"], row["ask"]) == (50.0, 50.25)


def test_snapshot_keeps_each_exchange_of_a_symbol(lake: Lake) -> None:
    rows = [
        trade("BHP", T0 + 1 * SECOND, 0, 0, 40.0, 10, exchange="ASX"),
        trade("BHP", T0 + 2 * SECOND, 0, 1, 40.1, 11, exchange="CXA"),
        trade("BHP", T0 + 3 * SECOND, 0, 2, 40.2, 12, exchange="ASX"),
        trade("BHP", T0 + 4 * SECOND, 0, 3, 40.3, 13, exchange="CXA"),
    ]
    lake.commit("trades", rows)
    engine = build_engine(lake, None)
    got = {
        r["exchange"]: r["last_price"]
        for r in engine.snapshot(symbols=["BHP"], exchange=None).rows.to_pylist()
    }
    assert got == {"ASX": 40.2, "CXA": 40.3}
    (asx,) = engine.snapshot(symbols=["BHP"], exchange="ASX").rows.to_pylist()
    assert asx["last_price"] == 40.2


def test_last_n_with_an_exchange_or_day_filter_is_never_short(lake: Lake) -> None:
    # Older commit: the session asked for; newer commit: the next session and another exchange,
    # in files whose ts bounds lie entirely after the older ones.
    day = [trade("BHP", T0 + i * HOUR // 2, 0, i, 40.0 + i, 10, session=20260311) for i in range(6)]
    later = [
        trade("BHP", T0 + 24 * HOUR + i * SECOND, 0, 6 + i, 41.0, 10, session=20260312, exchange="CXA")
        for i in range(20)
    ]
    lake.commit("trades", day)
    lake.commit("trades", later)
    engine = build_engine(lake, None)
    by_day = _trades(engine, symbol="BHP", when=TimeRange(day=date(2026, 3, 11)), last=3)
    assert _keys(by_day) == _sorted_keys(day)[-3:]
    by_exchange = _trades(engine, symbol="BHP", exchange="ASX", last=4)
    assert _keys(by_exchange) == _sorted_keys(day)[-4:]


# -- SQL ---------------------------------------------------------------------------------------


def test_sql_count_is_history_plus_live_and_joins_work(lake: Lake) -> None:
    history = _seq_trades(0, range(0, 12)) + _seq_trades(1, range(0, 6), symbol="CBA")
    lake.commit("trades", history)
    quotes = [
        quote("BHP" if i % 2 else "CBA", T0 + i * 3 * SECOND + 500_000, 0, i, 39.0 + i, 39.5 + i)
        for i in range(10)
    ]
    lake.commit("quotes", quotes[:7])
    live = FakeLive()
    live_trades = _seq_trades(0, range(12, 20)) + _seq_trades(1, range(4, 9), symbol="CBA")
    live.add("trades", "grpc://a", live_trades, {0: (12, 20), 1: (4, 9)})
    live.add("quotes", "grpc://a", quotes[5:], {0: (5, 10)})
    engine = build_engine(lake, live)
    trades = _seq_trades(0, range(0, 20)) + _seq_trades(1, range(0, 9), symbol="CBA")
    assert engine.sql("SELECT count(*) AS n FROM trades", max_rows=5).rows.to_pylist() == [{"n": len(trades)}]
    assert engine.sql("SELECT count(*) AS n FROM quotes", max_rows=5).rows.to_pylist() == [{"n": 10}]
    # The quote in force at each trade (ASOF join), as a quant would write it.
    asof = engine.sql(
        "SELECT t.kafka_partition AS p, t.kafka_offset AS o, q.bid FROM trades t "
        "ASOF JOIN quotes q ON t.symbol = q.symbol AND t.ts >= q.ts ORDER BY p, o",
        max_rows=1000,
    ).rows.to_pylist()
    want = []
    for t in sorted(trades, key=lambda r: (r["kafka_partition"], r["kafka_offset"])):
        before = [q for q in quotes if q["symbol"] == t["symbol"] and q["ts"] <= t["ts"]]
        if before:
            want.append(
                {
                    "p": t["kafka_partition"],
                    "o": t["kafka_offset"],
                    "bid": max(before, key=lambda q: q["ts"])["bid"],
                }
            )
    assert asof == want
    joined = engine.sql(
        "SELECT t.symbol, count(*) AS n FROM trades t JOIN quotes q USING (symbol) GROUP BY 1 ORDER BY 1",
        max_rows=10,
    ).rows.to_pylist()
    per = {
        s: sum(1 for t in trades if t["symbol"] == s) * sum(1 for q in quotes if q["symbol"] == s)
        for s in ("BHP", "CBA")
    }
    assert joined == [{"symbol": s, "n": n} for s, n in sorted(per.items())]


def test_sql_sums_of_quantities_come_back_as_integers(lake: Lake) -> None:
    rows = _seq_trades(0, range(0, 12))
    lake.commit("trades", rows)
    engine = build_engine(lake, FakeLive())

    out = engine.sql("SELECT sum(qty) AS volume FROM trades", max_rows=5).rows

    assert out.schema.field("volume").type == pa.int64()
    assert out.to_pylist() == [{"volume": sum(r["qty"] for r in rows)}]


def test_sql_over_an_empty_table_and_the_gaps_view(history_engine: Engine) -> None:
    assert history_engine.sql("SELECT count(*) AS n FROM reference_data", max_rows=5).rows.to_pylist() == [
        {"n": 0}
    ]
    open_gaps = history_engine.sql(
        "SELECT count(*) AS n FROM sequence_gaps WHERE status = 'open'", max_rows=5
    ).rows.to_pylist()
    assert open_gaps == [{"n": sum(1 for _, g in GAPS if g.status == "open")}]


# -- time travel and coverage ------------------------------------------------------------------


def test_as_of_reads_exactly_the_older_snapshot_and_no_live_part(lake: Lake) -> None:
    first = _seq_trades(0, range(0, 8))
    old = lake.commit("trades", first)
    old_ms = lake.writers["trades"].table.snapshot_by_id(old).timestamp_ms  # type: ignore[union-attr]
    while datetime.now(UTC).timestamp() * 1000 <= old_ms + 2:
        pass  # the next snapshot must be stamped at a later millisecond
    lake.commit("trades", _seq_trades(0, range(8, 12)))
    live = FakeLive()
    live.add("trades", "grpc://a", _seq_trades(0, range(12, 15)), {0: (12, 15)})
    engine = build_engine(lake, live)
    for as_of in (AsOf(snapshot_id=old), AsOf(at=datetime.fromtimestamp(old_ms / 1000, UTC))):
        result = _trades(engine, as_of=as_of)
        assert _keys(result) == _sorted_keys(first)
        cov = result.coverage
        assert cov.snapshots == {"trades": old} and cov.as_of == str(as_of)
        assert cov.live_from == {} and cov.endpoints_asked == 0
        bars = engine.bars(
            symbol="BHP", exchange=None, interval=BarInterval.DAY_1, when=TimeRange(), limit=10, as_of=as_of
        )
        assert bars.rows["trades"].to_pylist() == [len(first)]
    assert live.calls == []  # time travel never asks the buffers
    assert _trades(engine).rows.num_rows == 15


def test_as_of_an_unknown_snapshot_is_refused(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(3)))
    engine = build_engine(lake, None)
    with pytest.raises(QueryRejected) as err:
        _trades(engine, as_of=AsOf(snapshot_id=123456789))
    assert err.value.reason == "unknown_snapshot"
    with pytest.raises(QueryRejected) as err:
        _trades(engine, as_of=AsOf(at=datetime(2001, 1, 1, tzinfo=UTC)))
    assert err.value.reason == "unknown_snapshot"


def test_coverage_lists_deferred_ranges_of_the_snapshot(lake: Lake) -> None:
    ledger = DeferredLedger()
    ledger.add("trades", 0, 3, 5, ["tier3"], 2, 1_773_000_000.0)
    rows = [r for r in _seq_trades(0, range(0, 10)) if not 3 <= r["kafka_offset"] <= 4]  # 2 shed messages
    assert next_offsets(rows) == {0: 10}
    lake.commit("trades", rows, deferred=ledger)
    engine = build_engine(lake, None)
    cov = _trades(engine).coverage
    assert cov.deferred == [DeferredRange("trades", 0, 3, 5)]
    assert not cov.complete
    assert (
        engine.quotes(
            symbol=None, exchange=None, when=TimeRange(), last=None, limit=10, cursor=None, as_of=None
        ).coverage.deferred
        == []
    )


def test_coverage_level_is_the_highest_of_the_answering_processes(lake: Lake) -> None:
    lake.commit("trades", _seq_trades(0, range(2)))
    live = FakeLive()
    live.add("trades", "grpc://a", [], {0: (2, 2)}, {"level": 1, "level_name": "SOFT"})
    live.add("trades", "grpc://b", [], {1: (0, 0)}, {"level": 3, "level_name": "SHED_TIER2"})
    cov = _trades(build_engine(lake, live)).coverage
    assert (cov.level, cov.level_name) == (3, "SHED_TIER2")


def test_symbols_longer_than_the_manifest_bounds_are_still_found(lake: Lake) -> None:
    # Iceberg keeps 16-character string bounds (the upper one rounded up): pruning must not lose these.
    symbols = ["A" * 20 + "B", "A" * 20 + "C", "Z" * 24, "Z" * 27 + "A"]
    lake.commit("trades", [trade(s, T0 + i * SECOND, 0, i, 10.0 + i, 1) for i, s in enumerate(symbols)])
    engine = build_engine(lake, None)
    for i, s in enumerate(symbols):
        (row,) = _trades(engine, symbol=s).rows.to_pylist()
        assert (row["symbol"], row["kafka_offset"]) == (s, i)
    assert _trades(engine, symbol="A" * 20).rows.num_rows == 0


def test_status_reports_tables_and_endpoints(lake: Lake) -> None:
    sid = lake.commit("trades", _seq_trades(0, range(7)) + _seq_trades(1, range(3)))
    live = FakeLive(failed={"grpc://down": "no answer in 1 s"})
    live.add("trades", "grpc://up", [], {0: (7, 7)})
    engine = build_engine(lake, live)
    status = engine.status()
    trades = status["tables"]["trades"]
    assert (trades["snapshot_id"], trades["rows"], trades["offsets"]) == (str(sid), 10, {"0": 7, "1": 3})
    assert status["tables"]["quotes"]["snapshot_id"] is None
    assert status["live_endpoints"] == {"grpc://down": "no answer in 1 s", "grpc://up": {"level": 0}}
    ok, facts = engine.ready()
    assert ok and facts["catalog"] == "ok"
