"""A simulated market with injected gaps, duplicates, reorders and poison, through real Kafka into
real Iceberg: the tables must hold exactly the valid unique set, ``sequence_gaps`` exactly the
injected gaps, and the DLQ exactly the poison."""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from k2.config import Settings
from k2.feeds.report import FeedReport
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.ingest import IngestApp
from lake_probe import gap_ranges, landed_identities


def _dlq(settings: Settings, expected: int) -> list[dict[str, bytes]]:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "dlq-probe"})
    topic = settings.kafka.topics.dlq
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.partitions)])
    letters: list[dict[str, bytes]] = []
    try:
        for _ in range(60):
            for m in consumer.consume(1000, 0.5):
                assert m.error() is None
                headers = dict(m.headers() or [])
                headers["value"] = m.value() or b""
                letters.append(headers)
            if len(letters) >= expected:
                # one more poll proves nothing beyond the expected count is there
                extra = consumer.consume(1000, 1.0)
                letters += [dict(m.headers() or []) for m in extra]
                break
    finally:
        consumer.close()
    return letters


@pytest.fixture
def faulty_run(k2_settings: Settings) -> tuple[Settings, FeedReport]:
    config = SimulatorConfig(
        seed=11,
        tier1=5,
        tier2=15,
        tier3=30,
        messages=40_000,
        rate=0,
        gap_rate=0.01,
        duplicate_rate=0.01,
        reorder_rate=0.01,
        poison_rate=0.005,
    )
    report = simulate(k2_settings, config, progress=False)
    assert report.gaps and report.duplicates and report.reorders and len(report.poison_by_kind) >= 9
    result = IngestApp(k2_settings).run(exit_when_idle=2.0, max_seconds=300)
    assert result.exit_reason == "idle"
    return k2_settings, report


def test_tables_hold_exactly_the_valid_unique_set(faulty_run: tuple[Settings, FeedReport]) -> None:
    settings, report = faulty_run
    landed = landed_identities(settings)
    assert len(landed) == len(set(landed)), "a message identity landed twice"
    assert set(landed) == report.valid_keys()


def test_sequence_gaps_are_exactly_the_injected_gaps(faulty_run: tuple[Settings, FeedReport]) -> None:
    settings, report = faulty_run
    open_gaps = gap_ranges(settings, "open")
    injected = {(g.table, g.exchange, g.symbol, g.session, g.first_seq, g.last_seq) for g in report.gaps}
    assert open_gaps == injected
    # each reorder opened a one-seq gap that the late message then filled
    filled = gap_ranges(settings, "filled")
    reordered = {
        (o.table, o.exchange, o.symbol, o.session, o.first_seq, o.first_seq) for o in report.reorders
    }
    assert filled == reordered


def test_dlq_holds_exactly_the_poison_with_reasons(faulty_run: tuple[Settings, FeedReport]) -> None:
    settings, report = faulty_run
    letters = _dlq(settings, len(report.poison))
    assert len(letters) == len(report.poison)
    by_topic = Counter(letter["k2.source.topic"].decode() for letter in letters)
    assert by_topic == Counter(p.topic for p in report.poison)
    assert sorted(len(letter["value"]) for letter in letters) == sorted(p.bytes_len for p in report.poison)
    for letter in letters:
        assert letter["k2.reason"] and letter["k2.stage"] in (b"decode", b"validate")
        assert letter["k2.exception"]
        assert int(letter["k2.source.offset"]) >= 0
