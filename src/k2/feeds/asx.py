"""Replay the ASX sample (10-14 March 2014) onto Kafka as k2 wire messages.

Reading (:func:`read_asx`) is pure and needs no broker:

* ``company_id -> symbol`` comes from ``reference-data/company_info.csv``.
* ``session`` is the exchange-local trading date as ``YYYYMMDD``; ``ts`` is that local time
  (Australia/Sydney, AEDT = UTC+11 in March 2014) converted to UTC microseconds.
* The files carry no exchange sequence number, so ``seq`` is assigned per
  ``(stream, "ASX", symbol, session)`` in file order from 1. Rows sharing a timestamp are distinct
  events (several trades can print in one millisecond) and each gets its own seq.
* Trades and quotes of all symbols are merged by ``ts``. The merge is stable: ties keep
  trades before quotes, then symbol order, then file order, so within a stream seqs are produced
  in increasing order.
* Reference messages (one ``listing`` per company, one ``dividend`` per dividend row, plus splits
  and mergers if those files ever hold rows) come first, stamped with the first trading session
  and its local midnight; they are numbered per symbol in that order.
* A price of 0.0 for bid or ask means "none on the book" and becomes null.

Replaying (:func:`replay_asx`) paces by event time divided by ``speed``; a pause between two
consecutive messages never exceeds ``max_pause_s`` of wall time (default 1 s, whatever the speed),
so nights, weekends and the pre-open lull are compressed instead of waited out.
"""

from __future__ import annotations

import csv
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from k2.config import Settings
from k2.errors import FeedError
from k2.feeds.producer import FeedProducer, send_paced
from k2.feeds.report import FeedProgress, FeedReport, StreamRange, utc_iso
from k2.wire import SCHEMA_VERSION, Quote, Reference, Stream, Trade, encoder

__all__ = ["EXCHANGE", "AsxData", "expected_report", "load_asx", "pause_schedule", "read_asx", "replay_asx"]

EXCHANGE = "ASX"
WireMessage = Trade | Quote | Reference

_US = 1_000_000
_BATCH = 5_000  # messages per progress update
_EPOCH = date(1970, 1, 1)


@dataclass
class AsxData:
    """The whole sample as wire structs, in replay order, with the facts a report needs."""

    messages: list[tuple[Stream, WireMessage]]
    ts: np.ndarray  # int64 UTC microseconds, aligned with ``messages``
    symbols: dict[str, str]  # company_id -> symbol
    first_session: int
    # (stream, symbol, session) -> messages, which is also the last seq (seqs run 1..n)
    streams: dict[tuple[Stream, str, int], int] = field(default_factory=dict)


class _LocalClock:
    """Exchange-local ``MM/DD/YYYY`` + ``HH:MM:SS.mmm`` -> (session, UTC microseconds), vectorised.

    The UTC offset is looked up once per distinct local (date, hour), since offsets only change
    on the hour. An ambiguous local time (the repeated hour when daylight saving ends) resolves
    to its first occurrence (``fold=0``); the March 2014 sample has none (AEDT ends 6 April 2014).
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._offsets: dict[int, int] = {}  # local naive hour since epoch -> UTC offset in µs

    def _offset_us(self, local_hour: int) -> int:
        off = self._offsets.get(local_hour)
        if off is None:
            naive = datetime(1970, 1, 1) + timedelta(hours=local_hour)
            delta = naive.replace(tzinfo=self.tz).utcoffset() or timedelta(0)
            off = (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds
            self._offsets[local_hour] = off
        return off

    def to_utc(self, local_us: np.ndarray) -> np.ndarray:
        hours = local_us // (3_600 * _US)
        uniq, inverse = np.unique(hours, return_inverse=True)
        offsets = np.array([self._offset_us(int(h)) for h in uniq], dtype=np.int64)
        return local_us - offsets[inverse]

    def parse(
        self, dates: pa.ChunkedArray, times: pa.ChunkedArray, where: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        """(session YYYYMMDD, UTC µs) arrays for date and time columns."""
        if len(dates) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        for col, regex, what in ((dates, _DATE_RE, "MM/DD/YYYY"), (times, _TIME_RE, "HH:MM:SS.mmm")):
            ok = pc.match_substring_regex(col, regex)
            if not pc.all(pc.fill_null(ok, False)).as_py():
                bad = pc.indices_nonzero(pc.invert(pc.fill_null(ok, False)))[0].as_py()
                raise FeedError(f"{where}:{bad + 1}: expected {what}, got {col[bad].as_py()!r}")
        d = _digits(dates, 10)
        t = _digits(times, 12)
        year = d[:, 6] * 1000 + d[:, 7] * 100 + d[:, 8] * 10 + d[:, 9]
        month = d[:, 0] * 10 + d[:, 1]
        day = d[:, 3] * 10 + d[:, 4]
        bad = (month < 1) | (month > 12) | (day < 1) | (day > _days_in_month(year, month))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FeedError(f"{where}:{i + 1}: invalid calendar date {dates[i].as_py()!r}")
        session = year * 10_000 + month * 100 + day
        days = _days_from_civil(year, month, day)
        hms = (t[:, 0] * 10 + t[:, 1]) * 3_600 + (t[:, 3] * 10 + t[:, 4]) * 60 + t[:, 6] * 10 + t[:, 7]
        ms = t[:, 9] * 100 + t[:, 10] * 10 + t[:, 11]
        local_us = days * 86_400 * _US + hms * _US + ms * 1_000
        return session, self.to_utc(local_us)

    def midnight_utc_us(self, session: int) -> int:
        y, rest = divmod(session, 10_000)
        m, d = divmod(rest, 100)
        local = (date(y, m, d) - _EPOCH).days * 86_400 * _US
        return int(self.to_utc(np.array([local], dtype=np.int64))[0])


_DATE_RE = r"^\d\d/\d\d/\d\d\d\d$"
_TIME_RE = r"^\d\d:\d\d:\d\d\.\d\d\d$"


def _digits(col: pa.ChunkedArray, width: int) -> np.ndarray:
    """Strings already checked to be ``width`` ASCII chars as an (n, width) array of ``char - '0'``."""
    arr = col.combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(len(arr), width).astype(np.int64) - ord("0")


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm), vectorised."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _days_in_month(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    return np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(m, 0, 12)] + (
        leap & (m == 2)
    )


def _seq_in_file_order(session: np.ndarray) -> np.ndarray:
    """1, 2, 3, ... per session value, in array order (a file's order)."""
    order = np.argsort(session, kind="stable")
    s = session[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    counts = np.diff(np.r_[starts, len(s)])
    within = np.arange(len(s)) - np.repeat(starts, counts) + 1
    seq = np.empty_like(within)
    seq[order] = within
    return seq


def _is_empty_marker(path: Path) -> bool:
    """The vendor writes ``--- NO RECORDS TO REPORT ---`` instead of an empty file."""
    with path.open("rb") as f:
        head = f.read(4096)
    return not head.strip() or b"NO RECORDS" in head


def _rows(path: Path) -> list[list[str]]:
    """Small CSV files (reference data) as rows; a ``NO RECORDS`` file has none."""
    if _is_empty_marker(path):
        return []
    with path.open(newline="") as f:
        return [r for r in csv.reader(f) if r and any(c.strip() for c in r)]


def _read_csv(path: Path, columns: dict[str, pa.DataType]) -> pa.Table:
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(columns)),
            convert_options=pacsv.ConvertOptions(column_types=columns, strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeedError(f"cannot read {path}: {exc}") from exc


def _iso(mdy: str) -> str | None:
    mdy = mdy.strip()
    if not mdy:
        return None
    return f"{mdy[6:10]}-{mdy[0:2]}-{mdy[3:5]}"


def _num(s: str) -> float | None:
    s = s.strip()
    return float(s) if s else None


_TRADE_COLUMNS: dict[str, pa.DataType] = {
    "date": pa.string(),
    "time": pa.string(),
    "price": pa.float64(),
    "volume": pa.int64(),
    "qualifiers": pa.int64(),
    "venue": pa.string(),
    "buyer_id": pa.string(),  # documented empty; a few rows hold a price-like number; unused
}
_QUOTE_COLUMNS: dict[str, pa.DataType] = {
    "date": pa.string(),
    "time": pa.string(),
    "bid": pa.float64(),
    "ask": pa.float64(),
    "bid_size": pa.int64(),
    "ask_size": pa.int64(),
}


def _null_if_not_positive(col: pa.ChunkedArray) -> list[float | None]:
    """0.0 (the vendor's "none on the book") becomes null."""
    return pc.if_else(pc.greater(col, 0.0), col, pa.scalar(None, pa.float64())).to_pylist()


def _read_trades(path: Path, symbol: str, clock: _LocalClock) -> tuple[list[Trade], np.ndarray, np.ndarray]:
    if _is_empty_marker(path):
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    tbl = _read_csv(path, _TRADE_COLUMNS)
    for name in ("price", "volume"):
        if tbl[name].null_count:
            raise FeedError(f"{path}: {tbl[name].null_count} rows without {name}")
    session, ts = clock.parse(tbl["date"], tbl["time"], path)
    seq = _seq_in_file_order(session)
    codes = {q: [str(q)] for q in pc.unique(tbl["qualifiers"]).to_pylist() if q is not None}
    out = [
        Trade(
            schema_version=SCHEMA_VERSION,
            exchange=EXCHANGE,
            symbol=symbol,
            session=sess,
            seq=q,
            ts=t,
            price=price,
            qty=qty,
            conditions=codes[qual].copy() if qual is not None else [],
            trade_id=f"{symbol}-{sess}-{q}",
            venue=venue,
        )
        for sess, q, t, price, qty, qual, venue in zip(
            session.tolist(),
            seq.tolist(),
            ts.tolist(),
            tbl["price"].to_pylist(),
            tbl["volume"].to_pylist(),
            tbl["qualifiers"].to_pylist(),
            tbl["venue"].to_pylist(),
            strict=True,
        )
    ]
    return out, session, ts


def _read_quotes(path: Path, symbol: str, clock: _LocalClock) -> tuple[list[Quote], np.ndarray, np.ndarray]:
    if _is_empty_marker(path):
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    tbl = _read_csv(path, _QUOTE_COLUMNS)
    for name in ("bid", "ask", "bid_size", "ask_size"):
        if tbl[name].null_count:
            raise FeedError(f"{path}: {tbl[name].null_count} rows without {name}")
    session, ts = clock.parse(tbl["date"], tbl["time"], path)
    seq = _seq_in_file_order(session)
    out = [
        Quote(
            schema_version=SCHEMA_VERSION,
            exchange=EXCHANGE,
            symbol=symbol,
            session=sess,
            seq=q,
            ts=t,
            bid=bid,
            ask=ask,
            bid_size=bsz,
            ask_size=asz,
        )
        for sess, q, t, bid, ask, bsz, asz in zip(
            session.tolist(),
            seq.tolist(),
            ts.tolist(),
            _null_if_not_positive(tbl["bid"]),
            _null_if_not_positive(tbl["ask"]),
            tbl["bid_size"].to_pylist(),
            tbl["ask_size"].to_pylist(),
            strict=True,
        )
    ]
    return out, session, ts


def _read_companies(ref_dir: Path) -> list[list[str]]:
    rows = _rows(ref_dir / "company_info.csv")
    if not rows or rows[0][0].strip().lower() not in ("company_id", "company id"):
        raise FeedError(f"{ref_dir / 'company_info.csv'}: expected a header row starting with company_id")
    return rows[1:]


def _read_reference(
    ref_dir: Path, companies: list[list[str]], symbols: dict[str, str], session: int, ts: int
) -> tuple[list[Reference], dict[str, int]]:
    seqs: dict[str, int] = {}

    def ref(symbol: str, **fields: object) -> Reference:
        seqs[symbol] = seq = seqs.get(symbol, 0) + 1
        return Reference(
            schema_version=SCHEMA_VERSION,
            exchange=EXCHANGE,
            symbol=symbol,
            session=session,
            seq=seq,
            ts=ts,
            **fields,  # type: ignore[arg-type]
        )

    def symbol_of(cid: str, where: str) -> str:
        try:
            return symbols[cid.strip()]
        except KeyError:
            raise FeedError(f"{ref_dir / where}: company id {cid!r} not in company_info.csv") from None

    out: list[Reference] = []
    for _cid, symbol, name, isin, start, end in (r[:6] for r in companies):
        out.append(
            ref(
                symbol.strip(),
                kind="listing",
                name=name.strip(),
                isin=isin.strip() or None,
                listed_from=_iso(start),
                listed_to=_iso(end),
            )
        )
    for r in _rows(ref_dir / "dividends.csv")[1:]:
        cid, declared, ex, record, pay, net, gross, currency = r[:8]
        out.append(
            ref(
                symbol_of(cid, "dividends.csv"),
                kind="dividend",
                amount=_num(net),
                gross_amount=_num(gross),
                currency=currency.strip() or None,
                declared_date=_iso(declared),
                ex_date=_iso(ex),
                record_date=_iso(record),
                pay_date=_iso(pay),
            )
        )
    # Both files are "company id,effective date,ratio"; the sample's are empty ("NO RECORDS").
    for fname, kind in (("stock_splits.csv", "split"), ("mergers.csv", "merger")):
        path = ref_dir / fname
        if not path.exists():
            continue
        for r in _rows(path)[1:]:
            cid, effective, ratio = r[:3]
            out.append(ref(symbol_of(cid, fname), kind=kind, ratio=_num(ratio), ex_date=_iso(effective)))
    return out, seqs


def load_asx(data_dir: Path | str, tz: ZoneInfo | str = "Australia/Sydney") -> AsxData:
    """Read the whole sample into wire structs in replay order (see the module docstring)."""
    # Hundreds of thousands of new objects: the cyclic GC would rescan them over and over.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(Path(data_dir), ZoneInfo(tz) if isinstance(tz, str) else tz)
    finally:
        if gc_was_enabled:
            gc.enable()


def _load(root: Path, zone: ZoneInfo) -> AsxData:
    ref_dir = root / "reference-data"
    if not (ref_dir / "company_info.csv").exists():
        raise FeedError(f"no ASX sample at {root} (missing reference-data/company_info.csv)")
    companies = _read_companies(ref_dir)
    symbols = {r[0].strip(): r[1].strip() for r in companies}
    clock = _LocalClock(zone)

    market: list[tuple[Stream, WireMessage]] = []
    ts_parts: list[np.ndarray] = []
    streams: dict[tuple[Stream, str, int], int] = {}
    # Concatenation order is the tie-break order of the stable sort below.
    for stream in ("trades", "quotes"):
        for cid, symbol in sorted(symbols.items(), key=lambda kv: kv[1]):
            path = root / stream / f"{cid}.csv"
            if not path.exists():
                continue
            read = _read_trades if stream == "trades" else _read_quotes
            rows, session, ts = read(path, symbol, clock)
            market.extend((stream, m) for m in rows)
            ts_parts.append(ts)
            for sess, n in zip(*np.unique(session, return_counts=True), strict=True):
                streams[(stream, symbol, int(sess))] = int(n)
    if not market:
        raise FeedError(f"no trades or quotes under {root}")
    ts_all = np.concatenate(ts_parts)
    order = np.argsort(ts_all, kind="stable")

    first_session = min(session for (_, _, session) in streams)
    ref_ts = clock.midnight_utc_us(first_session)
    refs, ref_seqs = _read_reference(ref_dir, companies, symbols, first_session, ref_ts)
    for symbol, n in ref_seqs.items():
        streams[("reference", symbol, first_session)] = n

    messages: list[tuple[Stream, WireMessage]] = [("reference", r) for r in refs]
    messages.extend([market[i] for i in order.tolist()])
    all_ts = np.concatenate([np.full(len(refs), ref_ts, dtype=np.int64), ts_all[order]])
    return AsxData(
        messages=messages, ts=all_ts, symbols=symbols, first_session=first_session, streams=streams
    )


def read_asx(
    data_dir: Path | str, tz: ZoneInfo | str = "Australia/Sydney"
) -> Iterator[tuple[Stream, WireMessage]]:
    """``(stream, wire struct)`` for the whole sample in replay order (see the module docstring)."""
    yield from load_asx(data_dir, tz).messages


def expected_report(data: AsxData) -> FeedReport:
    """The accounting part of the report a full replay of ``data`` produces (no faults, no timings)."""
    streams = [
        StreamRange(
            table=stream, exchange=EXCHANGE, symbol=symbol, session=session, first_seq=1, last_seq=n, count=n
        )
        for (stream, symbol, session), n in sorted(data.streams.items())
    ]
    counts: dict[str, int] = {}
    symbols: dict[str, dict[str, int]] = {}
    for r in streams:
        counts[r.table] = counts.get(r.table, 0) + r.count
        per = symbols.setdefault(r.table, {})
        per[r.symbol] = per.get(r.symbol, 0) + r.count
    return FeedReport(
        feed="asx",
        exchange=EXCHANGE,
        counts=counts,
        symbols=symbols,
        streams=streams,
    )


def pause_schedule(ts_us: np.ndarray, speed: float, max_pause_s: float) -> np.ndarray:
    """Wall-clock offset (s) at which each message is due: event gaps / speed, each capped."""
    if len(ts_us) == 0:
        return np.zeros(0)
    gaps = np.diff(ts_us).astype(np.float64) / _US / speed
    np.clip(gaps, 0.0, max_pause_s, out=gaps)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def replay_asx(
    settings: Settings,
    speed: float | None = None,
    report_path: Path | str | None = None,
    progress: bool = True,
    max_pause_s: float = 1.0,
) -> FeedReport:
    """Produce the ASX sample to the trades/quotes/reference topics; ``speed=None`` is as fast as possible.

    ``speed`` is event time per wall time (1 = real time, 10 = ten times faster). Returns (and,
    with ``report_path``, writes) the exact report of what was delivered.
    """
    if speed is not None and speed <= 0:
        raise FeedError(f"speed must be positive or None (max), got {speed}")
    data = load_asx(settings.feeds.asx_data_dir, settings.feeds.asx_timezone)
    topics = settings.kafka.topics
    topic_of: dict[Stream, str] = {
        "trades": topics.trades,
        "quotes": topics.quotes,
        "reference": topics.reference,
    }
    keys = {s: s.encode() for s in data.symbols.values()}
    # Encode everything up front so the produce loop is bounded by Kafka, not by Python.
    wire = [(topic_of[stream], keys[m.symbol], encoder.encode(m)) for stream, m in data.messages]
    produced: dict[str, int] = {}
    for stream, _ in data.messages:
        produced[stream] = produced.get(stream, 0) + 1

    report = expected_report(data)
    report.params = {"speed": speed, "max_pause_s": max_pause_s, "data_dir": str(settings.feeds.asx_data_dir)}
    schedule = None if speed is None else pause_schedule(data.ts, speed, max_pause_s)

    with FeedProducer(settings.kafka) as producer:
        producer.connect(topic_of.values())
        started = time.time()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        bar = FeedProgress("ASX replay", len(wire)) if progress else None
        try:
            for start in range(0, len(wire), _BATCH):
                batch = wire[start : start + _BATCH]
                if schedule is None:
                    producer.send_many(batch)
                else:
                    send_paced(producer, batch, schedule[start : start + _BATCH].tolist(), t0)
                if bar is not None:
                    bar.advance(len(batch))
        finally:
            if bar is not None:
                bar.stop()
        producer.flush()
        elapsed = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    report.started_at = utc_iso(started)
    report.ended_at = utc_iso(started + elapsed)
    report.elapsed_s = round(elapsed, 6)
    report.cpu_s = round(cpu_s, 3)
    report.produced = produced
    report.produced_total = len(wire)
    report.messages_per_second = round(len(wire) / elapsed, 1) if elapsed > 0 else 0.0
    if report_path is not None:
        report.write(report_path)
    return report
