"""The bad-input corpus (tests/bad_input_corpus.py) through decode_batch: each case alone in its
batch and all of them mixed between valid neighbours get the verdict the corpus (and the table in
docs/wire-format.md) declares, with the same reason both ways."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bad_input_corpus import LANDS, NOW_US, Case, cases, filler
from k2.validation import DecodedBatch, ValidationRules, decode_batch
from k2.wire import STREAMS, Stream

RULES = ValidationRules(
    known_exchanges=frozenset({"ASX", "SIM"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)
DOCS = Path(__file__).parents[2] / "docs" / "wire-format.md"
CASES = cases(1)


def _decode(stream: Stream, values: list[bytes | None]) -> DecodedBatch:
    payloads = [v or b"" for v in values]  # as ingest does with a tombstone
    n = len(payloads)
    return decode_batch(stream, payloads, [0] * n, list(range(n)), RULES, NOW_US)


def _verdicts(batch: DecodedBatch, n: int) -> list[str]:
    out = [LANDS] * n
    for r in batch.rejects:
        out[r.index] = r.rule
    return out


def test_the_corpus_has_at_least_forty_kinds_of_bad_input() -> None:
    kinds = [c.kind for c in CASES]
    assert len(kinds) == len(set(kinds))
    assert sum(c.verdict != LANDS for c in CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)
def test_each_case_alone_in_its_batch_gets_its_verdict(case: Case) -> None:
    assert _verdicts(_decode(case.stream, [case.value]), 1) == [case.verdict]


@pytest.mark.parametrize("stream", STREAMS)
def test_all_cases_mixed_between_valid_neighbours_get_the_same_verdicts(stream: Stream) -> None:
    mine = [c for c in CASES if c.stream == stream]
    values: list[bytes | None] = []
    expected: list[str] = []
    for i, c in enumerate(mine):
        values += [filler(stream, 2 * i + 1), c.value]
        expected += [LANDS, c.verdict]
    assert _verdicts(_decode(stream, values), len(values)) == expected


def test_docs_table_matches_the_corpus() -> None:
    section = DOCS.read_text().split("## Bad-input corpus", 1)[1]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\w+) \| `?([^`|]+?)`? \|", section, re.MULTILINE)
    documented = {kind: (stream, verdict) for kind, stream, verdict in rows}
    corpus = {c.kind: (c.stream, c.verdict) for c in cases(1, broker_limit=16 << 20)}
    assert documented == corpus, "update the corpus table in docs/wire-format.md"
