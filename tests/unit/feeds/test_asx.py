"""The ASX sample read as wire messages: counts, clocks, seqs and reference data."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest

from k2.errors import FeedError
from k2.feeds.asx import AsxData, expected_report, load_asx, pause_schedule, read_asx
from k2.wire import Quote, Reference, Trade, encoder

DATA = Path(__file__).resolve().parents[3] / "data" / "asx-2014-03"

README_COUNTS = {  # symbol: (trades, quotes), from the sample's README
    "BHP": (91_631, 77_849),
    "RIO": (108_671, 91_171),
    "DVN": (232, 549),
    "MWR": (11, 60),
}


def utc_us(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> int:
    return int(datetime(year, month, day, hour, minute, second, us, tzinfo=UTC).timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def asx() -> AsxData:
    return load_asx(DATA, "Australia/Sydney")


def of(asx: AsxData, stream: str) -> list:
    return [m for s, m in asx.messages if s == stream]


def test_totals_match_the_readme(asx: AsxData) -> None:
    counts = Counter(s for s, _ in asx.messages)
    assert counts["trades"] == 200_545
    assert counts["quotes"] == 169_629
    assert counts["reference"] == 6  # 4 listings + 2 dividends; splits and mergers hold no records


def test_counts_per_symbol_match_the_readme(asx: AsxData) -> None:
    trades = Counter(m.symbol for m in of(asx, "trades"))
    quotes = Counter(m.symbol for m in of(asx, "quotes"))
    assert {s: (trades[s], quotes[s]) for s in README_COUNTS} == README_COUNTS
    assert asx.symbols == {"3153": "MWR", "7078": "BHP", "7181": "DVN", "7458": "RIO"}


def test_first_bhp_trade_is_stamped_in_utc_with_its_local_session(asx: AsxData) -> None:
    first = next(m for m in of(asx, "trades") if m.symbol == "BHP")
    # 03/10/2014 07:57:14.754 in Sydney (AEDT, UTC+11) is the evening before in UTC.
    assert first.ts == utc_us(2014, 3, 9, 20, 57, 14, 754_000)
    assert first.session == 20140310
    assert (first.seq, first.price, first.qty) == (1, 36.667, 20_000)
    assert first.conditions == ["3"]
    assert first.venue == "X"
    assert first.trade_id == "BHP-20140310-1"


def test_messages_are_in_global_event_time_order(asx: AsxData) -> None:
    ts = np.array([m.ts for _, m in asx.messages])
    assert (np.diff(ts) >= 0).all()
    assert (asx.ts == ts).all()


def test_seq_restarts_each_session_and_is_contiguous(asx: AsxData) -> None:
    seen: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for stream, m in asx.messages:
        seen[(stream, m.symbol, m.session)].append(m.seq)
    for key, seqs in seen.items():
        assert seqs == list(range(1, len(seqs) + 1)), key
    bhp_sessions = sorted(s for (stream, sym, s) in seen if stream == "trades" and sym == "BHP")
    assert bhp_sessions == [20140310, 20140311, 20140312, 20140313, 20140314]
    assert all(m.exchange == "ASX" for _, m in asx.messages)


def test_trades_sharing_a_timestamp_stay_distinct(asx: AsxData) -> None:
    trades = of(asx, "trades")
    assert len({(t.symbol, t.session, t.seq) for t in trades}) == len(trades)
    assert len({t.trade_id for t in trades}) == len(trades)
    by_ts = Counter((t.symbol, t.ts) for t in trades)
    assert max(by_ts.values()) > 1


def test_a_zero_ask_means_no_ask(asx: AsxData) -> None:
    quotes = of(asx, "quotes")
    first = next(q for q in quotes if q.symbol == "BHP")
    assert (first.bid, first.ask, first.bid_size, first.ask_size) == (37.7, None, 300, 0)
    assert b'"ask":null' in encoder.encode(first)
    no_ask = [q for q in quotes if q.ask is None]
    assert len(no_ask) == 20  # the first quote of each of 5 days, for each of 4 symbols
    assert all(q.ask_size == 0 for q in no_ask)
    assert all(q.bid is not None and q.bid > 0 for q in quotes)


def test_venue_is_null_or_x(asx: AsxData) -> None:
    venues = Counter(t.venue for t in of(asx, "trades"))
    assert set(venues) == {None, "X"}
    assert venues["X"] == 133 + 91  # BHP + RIO


def test_reference_messages_come_first_on_the_first_session(asx: AsxData) -> None:
    refs = of(asx, "reference")
    assert [s for s, _ in asx.messages[: len(refs)]] == ["reference"] * len(refs)
    midnight_sydney = utc_us(2014, 3, 9, 13)
    assert {(r.session, r.ts) for r in refs} == {(20140310, midnight_sydney)}
    listings = {r.symbol: r for r in refs if r.kind == "listing"}
    assert set(listings) == {"BHP", "RIO", "DVN", "MWR"}
    rio = listings["RIO"]
    assert (rio.name, rio.isin, rio.listed_from, rio.listed_to, rio.seq) == (
        "RIO TINTO LTD",
        "AU000000RIO1",
        "2008-05-07",
        "2014-03-31",
        1,
    )
    dividends = {r.symbol: r for r in refs if r.kind == "dividend"}
    assert set(dividends) == {"BHP", "RIO"}
    bhp = dividends["BHP"]
    assert (bhp.amount, bhp.gross_amount, bhp.currency, bhp.seq) == (0.59, 0.842857, "USD", 2)
    assert (bhp.declared_date, bhp.ex_date, bhp.record_date, bhp.pay_date) == (
        "2013-09-25",
        "2014-03-03",
        "2014-03-07",
        "2014-03-26",
    )


def test_every_message_round_trips_through_the_wire_structs(asx: AsxData) -> None:
    types = {"trades": Trade, "quotes": Quote, "reference": Reference}
    for stream, m in asx.messages[:: len(asx.messages) // 2_000]:
        assert msgspec.json.decode(encoder.encode(m), type=types[stream]) == m


def test_read_asx_yields_the_same_stream(asx: AsxData) -> None:
    head = []
    for i, item in enumerate(read_asx(DATA, "Australia/Sydney")):
        head.append(item)
        if i == 99:
            break
    assert head == asx.messages[:100]


def test_report_accounts_every_message_as_valid_and_unique(asx: AsxData) -> None:
    report = expected_report(asx)
    assert report.counts == {"trades": 200_545, "quotes": 169_629, "reference": 6}
    assert report.symbols["trades"]["RIO"] == 108_671
    keys = report.valid_keys()
    assert len(keys) == len(asx.messages)
    assert keys == {(s, m.exchange, m.symbol, m.session, m.seq) for s, m in asx.messages}


def test_pause_schedule_follows_event_time_but_caps_each_pause() -> None:
    ts = np.array([0, 1_000_000, 1_500_000, 14 * 3600 * 1_000_000], dtype=np.int64)
    assert pause_schedule(ts, speed=1.0, max_pause_s=1.0).tolist() == [0.0, 1.0, 1.5, 2.5]
    assert pause_schedule(ts, speed=10.0, max_pause_s=1.0).tolist() == pytest.approx([0.0, 0.1, 0.15, 1.15])


def write_sample(root: Path, *, trades: str, quotes: str, splits: str) -> Path:
    (root / "trades").mkdir(parents=True)
    (root / "quotes").mkdir()
    (root / "reference-data").mkdir()
    (root / "reference-data" / "company_info.csv").write_text(
        "company_id,symbol,company_name,ISIN,start_date,end_date\r\n"
        "1,ABC,ABC LTD,AU0000000ABC,01/02/2010,\r\n"
    )
    (root / "reference-data" / "dividends.csv").write_text(
        "company id,declared date,ex_date,record_date,pay_date,net amount,gross amount,currency type\r\n"
    )
    (root / "reference-data" / "stock_splits.csv").write_text(splits)
    (root / "trades" / "1.csv").write_text(trades)
    (root / "quotes" / "1.csv").write_text(quotes)
    return root


def test_local_time_follows_daylight_saving_and_files_may_be_empty(tmp_path: Path) -> None:
    root = write_sample(
        tmp_path / "s",
        # AEDT (UTC+11) until 6 April 2014 03:00, AEST (UTC+10) after.
        trades="04/04/2014,10:00:00.000,1.5,100,0,,\r\n04/07/2014,10:00:00.000,1.6,200,2,X,\r\n"
        "04/07/2014,10:00:00.000,1.6,300,0,,\r\n",
        quotes="--- NO RECORDS TO REPORT ---\r\n",
        splits="company id,effective date,ratio\r\n1,04/07/2014,2\r\n",
    )
    data = load_asx(root, "Australia/Sydney")
    trades = [m for s, m in data.messages if s == "trades"]
    assert [t.ts for t in trades] == [
        utc_us(2014, 4, 3, 23),
        utc_us(2014, 4, 7, 0),
        utc_us(2014, 4, 7, 0),
    ]
    assert [(t.session, t.seq) for t in trades] == [(20140404, 1), (20140407, 1), (20140407, 2)]
    assert not [m for s, m in data.messages if s == "quotes"]
    refs = [m for _, m in data.messages if isinstance(m, Reference)]
    assert [(r.kind, r.seq, r.session) for r in refs] == [("listing", 1, 20140404), ("split", 2, 20140404)]
    assert (refs[1].ratio, refs[1].ex_date) == (2.0, "2014-04-07")
    assert refs[0].listed_to is None


def test_a_bad_time_names_the_file_and_line(tmp_path: Path) -> None:
    root = write_sample(
        tmp_path / "s",
        trades="03/10/2014,10:00:00.000,1.5,100,0,,\r\n03/10/2014,9:00:00,1.5,100,0,,\r\n",
        quotes="",
        splits="",
    )
    with pytest.raises(FeedError, match=r"1\.csv:2: expected HH:MM:SS\.mmm"):
        load_asx(root, "Australia/Sydney")


def test_a_missing_sample_is_a_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="no ASX sample"):
        load_asx(tmp_path, "Australia/Sydney")
