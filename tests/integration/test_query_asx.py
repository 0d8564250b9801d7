"""The query API over the real ASX week equals an independent DuckDB computation over the raw CSV.

The week goes through real Kafka in three parts, cut mid-session and mid-minute on 12 March and
14 March (Sydney). The first two are ingested and committed to Iceberg, one after the other (trades
snapshots S0, then S1); the third is consumed by an ingest process that is not allowed to commit,
so while the API is asked it exists only in that process's live buffer, found through its status
file. Every daily bar, VWAP and 1-minute bar of every symbol-day is then history ∪ live, and the
14 March daily bars and the minute bars at the cut take rows from both sides. After that process
stops (and commits), the same answers come from history alone; ``as_of`` S0 and S1 answer from
exactly the rows pyiceberg reads at those snapshots, which are the CSV trades before each cut.

The reference reads the CSV files themselves with DuckDB (explicit columns): local Sydney times
become UTC through ICU, the trading day is the local date, and trades in the same millisecond are
ordered as the file lists them (that order decides the open or close of 590 minute bars). Every
CSV trade is valid and lands (``test_ingest_asx``), so the reference keeps them all.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from k2.api.app import create_app
from k2.config import Settings
from k2.feeds.asx import load_asx
from k2.feeds.producer import FeedProducer
from k2.ingest import IngestApp, IngestReport
from k2.lake import open_catalog
from k2.query.engine import open_engine
from k2.query.live_client import endpoints_from_status
from k2.wire import encoder

DATA = Path(__file__).resolve().parents[2] / "data" / "asx-2014-03"
SYDNEY = "Australia/Sydney"
# Where the replay is cut: mid-session and mid-minute, so a bar can hold rows of both parts.
EARLIER_US = int(datetime(2014, 3, 12, 13, 0, 15, tzinfo=ZoneInfo(SYDNEY)).timestamp() * 1_000_000)
CUTOFF_US = int(datetime(2014, 3, 14, 12, 0, 30, tzinfo=ZoneInfo(SYDNEY)).timestamp() * 1_000_000)
TRADES = 200_545
REL = 1e-9  # VWAP is a sum of products: summation order differs between engines

Bar = dict[str, Any]


# -- the reference: DuckDB over the CSV files --------------------------------------------------


_TRADE_COLUMNS = (
    "{'date': 'VARCHAR', 'time': 'VARCHAR', 'price': 'DOUBLE', 'volume': 'BIGINT', "
    "'qualifiers': 'INTEGER', 'venue': 'VARCHAR', 'buyer_id': 'VARCHAR'}"
)


def _reference() -> duckdb.DuckDBPyConnection:
    """A DuckDB database with ``trades(symbol, day, ts, n, price, qty)``: ``ts`` UTC microseconds,
    ``day`` the Sydney date, ``n`` the row's place in its file (the tie-break for equal ``ts``)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE company AS "
        "SELECT company_id, symbol FROM read_csv(?, header = true, all_varchar = true)",
        [str(DATA / "reference-data" / "company_info.csv")],
    )
    # CREATE TABLE keeps the scan's order (preserve_insertion_order), so rowid is file order.
    con.execute(
        f"CREATE TABLE raw AS SELECT * FROM read_csv(?, header = false, columns = {_TRADE_COLUMNS}, "
        "filename = true, auto_detect = false)",
        [str(DATA / "trades" / "*.csv")],
    )
    con.execute(
        f"""
        CREATE TABLE trades AS
        WITH parsed AS (
            SELECT regexp_extract(filename, '(\\d+)\\.csv$', 1) AS company_id, rowid AS n, price,
                   volume AS qty, strptime(date || ' ' || time, '%m/%d/%Y %H:%M:%S.%g') AS local_ts
            FROM raw)
        SELECT c.symbol, CAST(p.local_ts AS DATE) AS day,
               epoch_us(p.local_ts AT TIME ZONE '{SYDNEY}') AS ts, p.n, p.price, p.qty
        FROM parsed p JOIN company c USING (company_id)
        """
    )
    n = con.execute("SELECT count(*) FROM trades").fetchone()
    assert n == (TRADES,), n
    return con


def _reference_bars(con: duckdb.DuckDBPyConnection, minutes: bool, before_us: int | None = None) -> list[Bar]:
    """OHLCV bars per symbol and trading day (``minutes``: and UTC minute), in bar order.

    A daily bar starts at its first trade, a 1-minute bar at its UTC minute (as k2 names them).
    """
    bucket, start = ("ts // 60_000_000", "min(b) * 60_000_000") if minutes else ("0", "min(ts)")
    where = "" if before_us is None else f"WHERE ts < {before_us}"
    cur = con.execute(
        f"""
        SELECT symbol, day, {start} AS bar_start,
               arg_min(price, (ts, n)) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, (ts, n)) AS close, sum(qty) AS volume,
               sum(price * qty) / sum(qty) AS vwap, count(*) AS trades
        FROM (SELECT *, {bucket} AS b FROM trades {where})
        GROUP BY symbol, day, b ORDER BY symbol, day, bar_start
        """
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _symbol_days(bars: list[Bar]) -> list[tuple[str, date]]:
    return sorted({(b["symbol"], b["day"]) for b in bars})


# -- producing and ingesting ---------------------------------------------------------------------


Wire = list[tuple[str, bytes, bytes]]


def _replay_in_parts(settings: Settings, cuts: list[int]) -> list[Wire]:
    """The ASX sample as ``replay_asx`` sends it (same order, keys and seqs), cut before the
    first message at or past each UTC microsecond in ``cuts``.

    Sent as separate replays, so each part can be ingested before the next exists in Kafka.
    """
    data = load_asx(DATA, SYDNEY)
    splits = [0, *np.searchsorted(data.ts, cuts, side="left").tolist(), len(data.messages)]
    topics = settings.kafka.topics
    topic_of = {"trades": topics.trades, "quotes": topics.quotes, "reference": topics.reference}
    wire = [(topic_of[s], m.symbol.encode(), encoder.encode(m)) for s, m in data.messages]
    return [wire[a:b] for a, b in itertools.pairwise(splits)]


def _send(settings: Settings, wire: Wire) -> None:
    with FeedProducer(settings.kafka) as producer:
        producer.send_many(wire)


def _with_ingest(settings: Settings, **ingest: Any) -> Settings:
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=ingest)})


class _Background:
    """An in-process ingest app running in a thread, stopped (and so committed) on exit."""

    def __init__(self, settings: Settings) -> None:
        self.app = IngestApp(settings, writer_id="query-asx-live")
        self.report: IngestReport | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def _run(self) -> None:
        try:
            self.report = self.app.run(max_seconds=300)
        except BaseException as e:  # re-raised in the test thread by wait_for / stop
            self.error = e

    def __enter__(self) -> _Background:
        self._thread.start()
        return self

    def wait_for(self, consumed: int, status_dir: Path, timeout: float = 120.0) -> None:
        """Until ``consumed`` messages are buffered and the live endpoint is advertised."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            advertised = endpoints_from_status(status_dir, [], 15.0, time.time())
            if self.app.report.consumed >= consumed and advertised:
                return
            time.sleep(0.1)
        raise AssertionError(f"consumed {self.app.report.consumed} of {consumed} in {timeout} s")

    def stop(self) -> IngestReport:
        self.app.stop()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "ingest did not stop"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.app.stop()
            self._thread.join(timeout=120)


# -- asking the API ------------------------------------------------------------------------------


def _get(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    r = client.get(path, params={k: v for k, v in params.items() if v is not None})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["truncated"] is False
    return body


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


def _quantity(value: object) -> int:
    # A quantity is a JSON number (formats.py); DuckDB's sum(BIGINT) is a HUGEINT, which would
    # reach the encoder as decimal128 and be written as text.
    assert isinstance(value, int), f"quantity {value!r} is not a JSON integer"
    return value


def _api_bars(
    client: TestClient, symbol: str, interval: str, day: date | None = None, as_of: str | None = None
) -> tuple[list[Bar], dict[str, Any]]:
    body = _get(
        client,
        "/v1/bars",
        symbol=symbol,
        interval=interval,
        day=None if day is None else day.isoformat(),
        limit=100_000,
        as_of=as_of,
    )
    bars = [
        {
            "symbol": r["symbol"],
            "day": date.fromisoformat(r["trading_day"]),
            "bar_start": _us(r["bar_start"]),
            **{k: r[k] for k in ("open", "high", "low", "close", "vwap", "trades")},
            "volume": _quantity(r["volume"]),
        }
        for r in body["rows"]
    ]
    assert all(r["interval"] == interval and r["exchange"] == "ASX" for r in body["rows"])
    return bars, body["coverage"]


def _api_vwap(client: TestClient, as_of: str | None = None) -> tuple[list[Bar], dict[str, Any]]:
    body = _get(client, "/v1/vwap", as_of=as_of)
    rows = [
        {
            "symbol": r["symbol"],
            "day": date.fromisoformat(r["trading_day"]),
            "vwap": r["vwap"],
            "volume": _quantity(r["volume"]),
            "trades": r["trades"],
        }
        for r in body["rows"]
    ]
    return rows, body["coverage"]


def _assert_same_bars(got: list[Bar], want: list[Bar], what: str) -> None:
    """Same bars (keys, OHLC, volume, trades exactly; VWAP within REL), in the same order."""
    key = ("symbol", "day", "bar_start")
    assert [tuple(b[k] for k in key) for b in got] == [tuple(b[k] for k in key) for b in want], what
    for g, w in zip(got, want, strict=True):
        where = f"{what}: {g['symbol']} {g['day']} bar at {g['bar_start']}"
        for field in ("open", "high", "low", "close", "volume", "trades"):
            assert g[field] == w[field], f"{where}: {field} {g[field]} != {w[field]}"
        assert g["vwap"] == pytest.approx(w["vwap"], rel=REL), where


def _assert_same_vwap(got: list[Bar], want_daily: list[Bar], what: str) -> None:
    expect = [{k: b[k] for k in ("symbol", "day", "vwap", "volume", "trades")} for b in want_daily]
    assert [(g["symbol"], g["day"]) for g in got] == [(w["symbol"], w["day"]) for w in expect], what
    for g, w in zip(got, expect, strict=True):
        where = f"{what}: {g['symbol']} {g['day']}"
        assert (g["volume"], g["trades"]) == (w["volume"], w["trades"]), where
        assert g["vwap"] == pytest.approx(w["vwap"], rel=REL), where


def _check_all_answers(
    client: TestClient, con: duckdb.DuckDBPyConnection, what: str
) -> Iterator[dict[str, Any]]:
    """Daily bars, VWAP and every symbol-day's 1-minute bars against the reference; yields the
    coverage of every answer."""
    daily = _reference_bars(con, minutes=False)
    symbols = sorted({b["symbol"] for b in daily})
    for symbol in symbols:
        got, cov = _api_bars(client, symbol, "1-DAY-LAST")
        _assert_same_bars(got, [b for b in daily if b["symbol"] == symbol], f"{what}, daily")
        yield cov
    got_vwap, cov = _api_vwap(client)
    _assert_same_vwap(got_vwap, daily, f"{what}, vwap")
    yield cov
    minutes = _reference_bars(con, minutes=True)
    for symbol, day in _symbol_days(daily):
        got, cov = _api_bars(client, symbol, "1-MINUTE-LAST", day=day)
        want = [b for b in minutes if (b["symbol"], b["day"]) == (symbol, day)]
        _assert_same_bars(got, want, f"{what}, 1-minute")
        yield cov


def _counts_at(settings: Settings, snapshot_id: int) -> dict[tuple[str, date], tuple[int, int]]:
    """(symbol, day) -> (trades, volume) of one trades snapshot, read with pyiceberg."""
    table = open_catalog(settings.iceberg).load_table((settings.iceberg.namespace, "trades"))
    rows = table.scan(snapshot_id=snapshot_id, selected_fields=("symbol", "session", "qty")).to_arrow()
    counts: Counter[tuple[str, int]] = Counter()
    volumes: Counter[tuple[str, int]] = Counter()
    for symbol, session, qty in zip(
        *(rows[c].to_pylist() for c in ("symbol", "session", "qty")), strict=True
    ):
        counts[(symbol, session)] += 1
        volumes[(symbol, session)] += qty
    return {
        (symbol, date(session // 10_000, session // 100 % 100, session % 100)): (
            n,
            volumes[(symbol, session)],
        )
        for (symbol, session), n in counts.items()
    }


def _ingest_all(settings: Settings, wire: Wire) -> int:
    """Send ``wire``, ingest it until idle (everything committed); the trades snapshot id after."""
    _send(settings, wire)
    report = IngestApp(settings).run(exit_when_idle=2.0, max_seconds=240)
    assert report.exit_reason == "idle"
    table = open_catalog(settings.iceberg).load_table((settings.iceberg.namespace, "trades"))
    snap = table.current_snapshot()
    assert snap is not None
    return snap.snapshot_id


def _assert_as_of(
    client: TestClient, con: duckdb.DuckDBPyConnection, settings: Settings, snapshot_id: int, before_us: int
) -> int:
    """``as_of=snapshot_id`` answers from exactly the rows pyiceberg reads at that snapshot, and
    those are the CSV trades before ``before_us``; returns how many."""
    want = _reference_bars(con, minutes=False, before_us=before_us)
    got, cov = _api_vwap(client, as_of=str(snapshot_id))
    assert cov["as_of"] == str(snapshot_id) and not cov["live_from"], cov
    assert cov["snapshots"] == {"trades": str(snapshot_id)}, cov
    _assert_same_vwap(got, want, f"as_of {snapshot_id}, vwap")
    at = {(g["symbol"], g["day"]): (g["trades"], g["volume"]) for g in got}
    assert at == _counts_at(settings, snapshot_id)
    for symbol in sorted({b["symbol"] for b in want}):
        bars, _ = _api_bars(client, symbol, "1-DAY-LAST", as_of=str(snapshot_id))
        _assert_same_bars(bars, [b for b in want if b["symbol"] == symbol], f"as_of {snapshot_id}, daily")
    return sum(n for n, _ in at.values())


# -- the test ----------------------------------------------------------------------------------


def test_bars_and_vwap_over_history_and_live_equal_duckdb_over_the_csv(k2_settings: Settings) -> None:
    con = _reference()
    early, middle, late = _replay_in_parts(k2_settings, [EARLIER_US, CUTOFF_US])

    # Everything before the second cut lands in Iceberg, in two ingest runs: snapshots S0, then S1.
    s0 = _ingest_all(k2_settings, early)
    s1 = _ingest_all(k2_settings, middle)
    assert s1 != s0

    # The rest is consumed by a process that does not commit while the API is asked.
    _send(k2_settings, late)
    no_commit = _with_ingest(k2_settings, flush_rows=10_000_000, flush_seconds=3_600.0)
    with (
        _Background(no_commit) as live,
        TestClient(create_app(open_engine(k2_settings), k2_settings.api)) as client,
    ):
        live.wait_for(len(late), k2_settings.ingest.status_dir)
        for cov in _check_all_answers(client, con, "history ∪ live"):
            assert cov["snapshots"] == {"trades": str(s1)}, cov
            assert cov["live_from"].get("trades"), f"no live part used: {cov}"
            assert cov["endpoints_answered"] == 1 and cov["complete"], cov
        assert live.stop().exit_reason == "stopped"

        # After the commit on stop: the same answers from history alone.
        table = open_catalog(k2_settings.iceberg).load_table((k2_settings.iceberg.namespace, "trades"))
        s2 = table.current_snapshot()
        assert s2 is not None and s2.snapshot_id != s1
        assert table.scan(selected_fields=("ts",)).to_arrow().num_rows == TRADES
        for cov in _check_all_answers(client, con, "history"):
            assert cov["snapshots"] == {"trades": str(s2.snapshot_id)}, cov
            assert not cov["live_from"], cov

        # Time travel: each earlier snapshot holds exactly the trades before its cut, fewer than now.
        in_s0 = _assert_as_of(client, con, k2_settings, s0, EARLIER_US)
        in_s1 = _assert_as_of(client, con, k2_settings, s1, CUTOFF_US)
        assert 0 < in_s0 < in_s1 < TRADES
