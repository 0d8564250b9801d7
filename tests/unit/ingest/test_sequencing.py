"""apply_sequencing: dedup and the sequence tracker applied to a decoded batch, per partition.

Input tables come from decode_batch, so they carry the real schema and Kafka lineage.
"""

from __future__ import annotations

import itertools

import msgspec
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.config import IngestSettings
from k2.ingest.restore import new_sequencing
from k2.ingest.sequencing import PartitionSequencing, apply_sequencing
from k2.validation import ValidationRules, decode_batch

NOW_US = 1_700_000_000_000_000
DAY = 20231114
RULES = ValidationRules(
    known_exchanges=frozenset({"ASX"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)

Msg = tuple[int, str, int, int]  # (kafka partition, symbol, seq, session)


def states(*partitions: int) -> dict[int, PartitionSequencing]:
    return {p: new_sequencing(IngestSettings()) for p in partitions}


def batch(msgs: list[Msg], first_offset: int = 0) -> pa.Table:
    """Decoded trade rows in arrival order; offsets count up from ``first_offset``."""
    payloads = [
        msgspec.json.encode(
            dict(
                schema_version=1,
                exchange="ASX",
                symbol=symbol,
                session=session,
                seq=seq,
                ts=NOW_US - 1_000,
                price=10.0,
                qty=1,
                trade_id=f"{symbol}-{session}-{seq}",
            )
        )
        for _, symbol, seq, session in msgs
    ]
    offsets = list(range(first_offset, first_offset + len(msgs)))
    decoded = decode_batch("trades", payloads, [m[0] for m in msgs], offsets, RULES, NOW_US)
    assert decoded.rejects == []
    return decoded.rows


def landed(rows: pa.Table) -> set[tuple[int, str, int, int]]:
    """(partition, symbol, seq, offset) of each row."""
    cols = rows.select(["kafka_partition", "symbol", "seq", "kafka_offset"]).to_pylist()
    return {(r["kafka_partition"], r["symbol"], r["seq"], r["kafka_offset"]) for r in cols}


def test_duplicates_in_one_batch_and_across_batches_are_dropped_and_counted() -> None:
    st_ = states(0, 1)
    first = [
        (0, "BHP", 1, DAY),
        (1, "CBA", 1, DAY),
        (0, "BHP", 1, DAY),
        (0, "NAB", 1, DAY),
        (1, "CBA", 2, DAY),
    ]

    out1 = apply_sequencing(batch(first, first_offset=0), st_, NOW_US)

    assert landed(out1.rows) == {(0, "BHP", 1, 0), (1, "CBA", 1, 1), (0, "NAB", 1, 3), (1, "CBA", 2, 4)}
    assert out1.duplicates == 1
    assert out1.unplaceable.num_rows == 0

    # Redelivery after a restart: old identities again, interleaved with new ones.
    second = [
        (1, "CBA", 2, DAY),
        (0, "BHP", 2, DAY),
        (0, "BHP", 1, DAY),
        (1, "CBA", 3, DAY),
        (0, "NAB", 1, DAY),
    ]
    out2 = apply_sequencing(batch(second, first_offset=5), st_, NOW_US)

    assert landed(out2.rows) == {(0, "BHP", 2, 6), (1, "CBA", 3, 8)}
    assert out2.duplicates == 3
    assert out2.unplaceable.num_rows == 0
    assert st_[0].tracker.open_gaps() == [] and st_[1].tracker.open_gaps() == []


def test_tracker_sees_each_streams_arrival_order_so_a_swap_is_one_gap_later_filled() -> None:
    st_ = states(0, 1)
    msgs = [
        (0, "BHP", 1, DAY),
        (1, "BHP", 1, DAY),
        (0, "CBA", 1, DAY),
        (0, "BHP", 3, DAY),  # BHP on partition 0 arrives 1, 3, 2
        (1, "BHP", 2, DAY),
        (0, "CBA", 2, DAY),
        (0, "BHP", 2, DAY),
        (1, "BHP", 3, DAY),
    ]

    out = apply_sequencing(batch(msgs), st_, NOW_US)

    assert out.rows.num_rows == len(msgs) and out.duplicates == 0
    gaps = st_[0].tracker.gaps("ASX", "BHP", DAY)
    assert [(g.first_seq, g.last_seq, g.status) for g in gaps] == [(2, 2, "filled")]
    assert st_[0].tracker.stats().late == 1
    assert st_[0].tracker.gaps("ASX", "CBA", DAY) == []
    assert st_[1].tracker.gaps("ASX", "BHP", DAY) == []  # partition 1's BHP arrived in order


def test_gap_left_open_by_one_batch_is_filled_by_the_next() -> None:
    st_ = states(0)
    apply_sequencing(batch([(0, "BHP", 1, DAY), (0, "BHP", 4, DAY)]), st_, NOW_US)
    assert [(g.first_seq, g.last_seq) for g in st_[0].tracker.open_gaps()] == [(2, 3)]

    out = apply_sequencing(batch([(0, "BHP", 3, DAY), (0, "BHP", 2, DAY)], first_offset=2), st_, NOW_US)

    assert landed(out.rows) == {(0, "BHP", 3, 2), (0, "BHP", 2, 3)}
    assert st_[0].tracker.open_gaps() == []


def test_stale_session_goes_to_unplaceable_not_to_rows_and_is_not_a_duplicate() -> None:
    st_ = states(0)
    for offset, day in enumerate((20231113, 20231114, 20231115)):  # two sessions are retained
        apply_sequencing(batch([(0, "BHP", 1, day)], first_offset=offset), st_, NOW_US)

    out = apply_sequencing(
        batch([(0, "BHP", 2, 20231113), (0, "BHP", 2, 20231115)], first_offset=3), st_, NOW_US
    )

    assert landed(out.rows) == {(0, "BHP", 2, 4)}
    assert landed(out.unplaceable) == {(0, "BHP", 2, 3)}
    assert out.unplaceable["session"].to_pylist() == [20231113]
    assert out.duplicates == 0
    assert out.unplaceable.schema == out.rows.schema  # the DLQ path gets whole rows


def test_unknown_session_older_than_the_retained_ones_is_unplaceable() -> None:
    st_ = states(0)
    apply_sequencing(batch([(0, "BHP", 1, 20231114)]), st_, NOW_US)

    out = apply_sequencing(batch([(0, "BHP", 1, 20231110)], first_offset=1), st_, NOW_US)

    assert out.rows.num_rows == 0
    assert landed(out.unplaceable) == {(0, "BHP", 1, 1)}
    assert out.duplicates == 0


def test_verdict_does_not_depend_on_batch_boundaries_when_an_older_session_arrives_second() -> None:
    msgs = [(0, "BHP", 1, 20231115), (0, "BHP", 1, 20231114)]
    together = apply_sequencing(batch(msgs), states(0), NOW_US)
    apart_states = states(0)
    first = apply_sequencing(batch(msgs[:1]), apart_states, NOW_US)
    second = apply_sequencing(batch(msgs[1:], first_offset=1), apart_states, NOW_US)

    assert landed(together.rows) == landed(first.rows) | landed(second.rows)
    assert landed(together.unplaceable) == landed(second.unplaceable)


def test_empty_batch_lands_nothing() -> None:
    out = apply_sequencing(batch([]), states(0), NOW_US)

    assert out.rows.num_rows == 0 and out.unplaceable.num_rows == 0 and out.duplicates == 0


_msg = st.tuples(st.sampled_from([0, 1]), st.sampled_from(["BHP", "CBA", "NAB"]), st.integers(1, 12))


@settings(max_examples=60, deadline=None)
@given(msgs=st.lists(_msg, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_first_arrival_of_each_identity_lands_once_whatever_the_batching(
    msgs: list[tuple[int, str, int]], cuts: list[int]
) -> None:
    st_ = states(0, 1)
    bounds = sorted({0, len(msgs), *(c for c in cuts if c < len(msgs))})
    rows: set[tuple[int, str, int, int]] = set()
    duplicates = 0

    for lo, hi in itertools.pairwise(bounds):
        part = [(p, sym, seq, DAY) for p, sym, seq in msgs[lo:hi]]
        out = apply_sequencing(batch(part, first_offset=lo), st_, NOW_US)
        assert out.unplaceable.num_rows == 0
        rows |= landed(out.rows)
        duplicates += out.duplicates

    first_offset: dict[tuple[int, str, int], int] = {}
    for offset, m in enumerate(msgs):
        first_offset.setdefault(m, offset)
    assert rows == {(p, sym, seq, off) for (p, sym, seq), off in first_offset.items()}
    assert duplicates == len(msgs) - len(first_offset)
