"""Feeds against the real broker: what the report says was produced is what the topics hold."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from confluent_kafka import Consumer, TopicPartition

from k2.config import Settings
from k2.feeds import SimulatorConfig, generate, replay_asx, simulate


def topic_sizes(settings: Settings) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "k2-feeds-probe"})
    try:
        sizes = {}
        for topic in settings.kafka.topics.data_topics():
            total = 0
            for p in range(settings.kafka.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += high - low
            sizes[topic] = total
        return sizes
    finally:
        consumer.close()


def consume_all(
    settings: Settings, expected: int, timeout_s: float = 60.0
) -> list[tuple[str, int, bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "k2-feeds-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    out: list[tuple[str, int, bytes, bytes]] = []
    try:
        consumer.subscribe(settings.kafka.topics.data_topics())
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append((msg.topic(), msg.partition(), msg.key(), msg.value()))  # type: ignore[arg-type]
    finally:
        consumer.close()
    return out


def test_simulator_run_lands_byte_for_byte_in_per_symbol_order(k2_settings: Settings) -> None:
    cfg = SimulatorConfig(
        seed=3, tier1=2, tier2=3, tier3=5, messages=5_000,
        gap_rate=0.01, duplicate_rate=0.01, reorder_rate=0.01, poison_rate=0.005,
    )  # fmt: skip
    report = simulate(k2_settings, cfg, progress=False)
    topics = k2_settings.kafka.topics
    topic_of = {"trades": topics.trades, "quotes": topics.quotes, "reference": topics.reference}
    assert topic_sizes(k2_settings) == {topic_of[t]: n for t, n in report.produced.items()}
    assert len(report.poison) > 0 and len(report.duplicates) > 0

    consumed = consume_all(k2_settings, report.produced_total)
    again = cfg.model_copy(update={"start_ts_us": report.params["resolved_start_ts_us"]})
    expected = [(topic_of[t], k, v) for t, k, v in generate(again, topics)]
    assert Counter((t, k, v) for t, _, k, v in consumed) == Counter(expected)
    # Keyed by symbol: one partition per symbol, and within it the order the feed produced.
    by_key_seen: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for t, p, k, v in consumed:
        by_key_seen[(t, k)].append(v)
        partitions[k].add(p)
    by_key_sent: dict[tuple[str, bytes], list[bytes]] = defaultdict(list)
    for t, k, v in expected:
        by_key_sent[(t, k)].append(v)
    assert by_key_seen == by_key_sent
    assert all(len(ps) == 1 for ps in partitions.values())


def test_simulator_paces_to_the_target_rate(k2_settings: Settings) -> None:
    cfg = SimulatorConfig(seed=1, tier1=1, tier2=1, tier3=1, rate=2_000, messages=3_000)
    t0 = time.perf_counter()
    report = simulate(k2_settings, cfg, progress=False)
    elapsed = time.perf_counter() - t0
    assert 1.4 < elapsed < 5.0, elapsed
    assert report.counts["trades"] + report.counts["quotes"] == 3_000


def test_asx_replay_puts_every_message_on_its_topic(k2_settings: Settings) -> None:
    report = replay_asx(k2_settings, speed=None, progress=False)
    topics = k2_settings.kafka.topics
    assert topic_sizes(k2_settings) == {topics.trades: 200_545, topics.quotes: 169_629, topics.reference: 6}
    assert report.produced_total == 370_180
    assert report.messages_per_second > 0
