"""The bad-input corpus through the real broker and real Iceberg, each case produced twice: once
mixed among valid messages (large batches), once alone in its batch (``consume_batch = 1``). Both
times ingest runs as a real ``k2 ingest`` process and must exit 0; afterwards every valid message
has landed once, and every bad one is in the DLQ once per round with its original key, value and
headers and the same reason both times. A record as large as the topic accepts is among them."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bad_input_corpus import LANDS, Case, cases, filler
from k2.broker.topics import admin_client, max_message_bytes
from k2.config import Settings
from k2.wire import STREAMS
from lake_probe import landed_identities, start_ingest

FILLERS_PER_CASE = 20


def _topic(settings: Settings, stream: str) -> str:
    return getattr(settings.kafka.topics, stream)  # type: ignore[no-any-return]


def _produce(
    settings: Settings,
    records: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes | None]]]],
    limit: int,
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "message.max.bytes": limit + 4096,
            "linger.ms": 20,
        }
    )
    errors: list[str] = []
    for topic, key, value, headers in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            headers=headers or None,
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


def _run_ingest(settings: Settings, log: Path) -> None:
    proc = start_ingest(settings, log, "--exit-when-idle", "3")
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def _dlq(settings: Settings) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    """Every DLQ record as (key, value, headers), read to the end of every partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "corpus-dlq-probe",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    topic = settings.kafka.topics.dlq
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.partitions)])
    out = []
    at_end: set[int] = set()
    try:
        while len(at_end) < settings.kafka.partitions:
            for m in consumer.consume(100, 1.0):
                if m.error() is not None:
                    at_end.add(m.partition())
                    continue
                out.append((m.key(), m.value(), list(m.headers() or [])))
    finally:
        consumer.close()
    return out


@pytest.fixture
def corpus_run(k2_settings: Settings, tmp_path: Path) -> tuple[Settings, list[Case], list[Case], int]:
    settings = k2_settings
    trades = settings.kafka.topics.trades
    limit = max_message_bytes(admin_client(settings.kafka.bootstrap_servers), [trades])[trades]
    assert limit >= 1 << 20
    round1, round2 = cases(1, broker_limit=limit), cases(2, broker_limit=limit)

    # Round 1: each case between valid neighbours of its stream, so batches mix good and bad.
    records = []
    seq = dict.fromkeys(STREAMS, 0)
    for case in round1:
        for _ in range(FILLERS_PER_CASE):
            seq[case.stream] += 1
            records.append(
                (_topic(settings, case.stream), b"GOOD", filler(case.stream, seq[case.stream]), [])
            )
        records.append((_topic(settings, case.stream), case.key, case.value, list(case.headers)))
    _produce(settings, records, limit)
    _run_ingest(settings, tmp_path / "ingest-mixed.log")

    # Round 2: every case alone in its batch.
    alone = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"consume_batch": 1})})
    _produce(settings, [(_topic(settings, c.stream), c.key, c.value, list(c.headers)) for c in round2], limit)
    _run_ingest(alone, tmp_path / "ingest-alone.log")
    return settings, round1, round2, sum(seq.values())


def test_every_valid_message_lands_exactly_once(
    corpus_run: tuple[Settings, list[Case], list[Case], int],
) -> None:
    settings, round1, round2, fillers = corpus_run
    landed = landed_identities(settings)
    assert len(landed) == len(set(landed)), "a message landed twice"
    good = [ident for ident in landed if ident[2] == "GOOD"]
    assert len(good) == fillers
    corpus_landed = {(ident[0], ident[2], ident[4]) for ident in landed if ident[2] != "GOOD"}
    expected = set()
    for round_, batch in ((1, round1), (2, round2)):
        for c in batch:
            if c.verdict == LANDS:
                expected.add((c.stream, _symbol_of(c), round_))
    assert corpus_landed == expected


def _symbol_of(case: Case) -> str:
    """The symbol of a landing case (a regex: some nest deeper than ``json`` can parse)."""
    assert case.value is not None
    found = re.search(rb'"symbol":("(?:[^"\\]|\\.)*")', case.value)
    assert found is not None
    return str(json.loads(found.group(1)))


def test_every_bad_message_is_in_the_dlq_once_per_round_with_its_bytes_headers_and_reason(
    corpus_run: tuple[Settings, list[Case], list[Case], int],
) -> None:
    settings, round1, round2, _ = corpus_run
    letters = _dlq(settings)
    by_kind: dict[
        bytes | None, list[tuple[bytes | None, dict[str, bytes | None], list[tuple[str, bytes | None]]]]
    ] = defaultdict(list)
    for key, value, headers in letters:
        k2_headers = {k: v for k, v in headers if k.startswith("k2.")}
        original = [(k, v) for k, v in headers if not k.startswith("k2.")]
        by_kind[key].append((value, k2_headers, original))
    bad = [c for c in round1 if c.verdict != LANDS]
    assert set(by_kind) == {c.key for c in bad}, "the DLQ holds exactly the bad kinds"
    second = {c.kind: c for c in round2}
    for c in bad:
        got = by_kind[c.key]
        assert len(got) == 2, f"{c.kind}: {len(got)} DLQ records, expected one per round"
        assert sorted(h["k2.reason"] or b"" for _, h, _ in got) == [c.verdict.encode()] * 2, c.kind
        values = sorted((v or b"" for v, _, _ in got), key=len)
        assert sorted([c.value or b"", second[c.kind].value or b""], key=len) == values, c.kind
        for _, h, original in got:
            assert original == list(c.headers), f"{c.kind}: original headers changed"
            assert h["k2.source.topic"] == _topic(settings, c.stream).encode()
            assert "k2.value.truncated" not in h, f"{c.kind}: a record the source held was cut"
