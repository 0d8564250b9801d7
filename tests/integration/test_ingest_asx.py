"""Replay all of the ASX sample through real Kafka into real Iceberg, then read it back
independently (a fresh pyiceberg catalog, a CSV parser written here) and compare row for row."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from k2.config import Settings
from k2.feeds.asx import replay_asx
from k2.ingest import IngestApp
from k2.lake import open_catalog, read_offsets

DATA = Path(__file__).resolve().parents[2] / "data" / "asx-2014-03"
SYDNEY = ZoneInfo("Australia/Sydney")


def _symbols() -> dict[str, str]:
    with open(DATA / "reference-data" / "company_info.csv", newline="") as f:
        return {row["company_id"]: row["symbol"] for row in csv.DictReader(f)}


def _utc_us(date: str, time: str) -> tuple[int, int]:
    local = datetime.strptime(f"{date} {time}", "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=SYDNEY)
    session = int(local.strftime("%Y%m%d"))
    return round(local.timestamp() * 1_000_000), session


def _expected(kind: str) -> dict[tuple[str, int], list[tuple[object, ...]]]:
    """CSV rows per (symbol, local trading date), in file order."""
    out: dict[tuple[str, int], list[tuple[object, ...]]] = defaultdict(list)
    for company, symbol in _symbols().items():
        path = DATA / kind / f"{company}.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            for row in csv.reader(f):
                ts, session = _utc_us(row[0], row[1])
                if kind == "trades":
                    venue = row[5] or None
                    rec: tuple[object, ...] = (ts, float(row[2]), int(row[3]), [row[4]], venue)
                else:
                    bid, ask = float(row[2]), float(row[3])
                    rec = (ts, bid or None, ask or None, int(row[4]), int(row[5]))
                out[(symbol, session)].append(rec)
    return out


def _landed(table: pa.Table, kind: str) -> dict[tuple[str, int], list[tuple[object, ...]]]:
    """Iceberg rows per (symbol, session), ordered by seq (which the replayer gave in file order)."""
    t = table.sort_by([("symbol", "ascending"), ("session", "ascending"), ("seq", "ascending")])
    out: dict[tuple[str, int], list[tuple[object, ...]]] = defaultdict(list)
    seqs: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in t.to_pylist():
        ts = round(r["ts"].timestamp() * 1_000_000)
        if kind == "trades":
            rec: tuple[object, ...] = (ts, r["price"], r["qty"], r["conditions"], r["venue"])
        else:
            rec = (ts, r["bid"], r["ask"], r["bid_size"], r["ask_size"])
        out[(r["symbol"], r["session"])].append(rec)
        seqs[(r["symbol"], r["session"])].append(r["seq"])
    for key, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), f"seq of {key} not 1..n"
    return out


@pytest.fixture
def asx_ingested(k2_settings: Settings) -> Settings:
    report = replay_asx(k2_settings, speed=None, progress=False)
    assert report.produced_total == 200_545 + 169_629 + report.produced.get("reference", 0)
    result = IngestApp(k2_settings).run(exit_when_idle=2.0, max_seconds=300)
    assert result.exit_reason == "idle"
    return k2_settings


def test_asx_replay_lands_every_trade_and_quote_exactly_once(asx_ingested: Settings) -> None:
    catalog = open_catalog(asx_ingested.iceberg)  # a fresh catalog: read what is really stored
    ns = asx_ingested.iceberg.namespace
    trades = catalog.load_table((ns, "trades")).scan().to_arrow()
    quotes = catalog.load_table((ns, "quotes")).scan().to_arrow()
    assert trades.num_rows == 200_545
    assert quotes.num_rows == 169_629
    assert _landed(trades, "trades") == _expected("trades")
    assert _landed(quotes, "quotes") == _expected("quotes")


def test_asx_offsets_in_snapshot_match_topic_end(asx_ingested: Settings) -> None:
    from confluent_kafka import Consumer, TopicPartition

    catalog = open_catalog(asx_ingested.iceberg)
    table = catalog.load_table((asx_ingested.iceberg.namespace, "trades"))
    stored = read_offsets(table).for_topic(asx_ingested.kafka.topics.trades)
    consumer = Consumer({"bootstrap.servers": asx_ingested.kafka.bootstrap_servers, "group.id": "probe"})
    try:
        for p in range(asx_ingested.kafka.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(asx_ingested.kafka.topics.trades, p), 10)
            assert stored.get(p, 0) == high
    finally:
        consumer.close()


def test_restart_after_full_ingest_adds_nothing(asx_ingested: Settings) -> None:
    replayed = replay_asx(asx_ingested, speed=None, progress=False)  # the same feed, again
    again = IngestApp(asx_ingested).run(exit_when_idle=2.0, max_seconds=300)
    assert again.duplicates == replayed.produced_total
    assert sum(again.landed.values()) == 0
    catalog = open_catalog(asx_ingested.iceberg)
    ns = asx_ingested.iceberg.namespace
    assert catalog.load_table((ns, "trades")).scan().to_arrow().num_rows == 200_545
    gaps = catalog.load_table((ns, "sequence_gaps")).scan().to_arrow()
    assert gaps.num_rows == 0
