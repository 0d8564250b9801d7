"""Dedup: each identity admitted once, in bounded memory, across batch splits and restarts."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.dedup import Dedup

EX = "SIM"


def arr(*seqs: int) -> np.ndarray:
    return np.array(seqs, dtype=np.int64)


def test_in_order_stream_takes_fast_path_and_costs_one_range() -> None:
    d = Dedup()
    for start in range(1, 10_001, 100):
        mask = d.admit(EX, "BHP", 1, np.arange(start, start + 100, dtype=np.int64), now_us=start)
        assert mask.all()
    assert d.ranges(EX, "BHP", 1) == [(1, 10_000)]
    s = d.stats()
    assert (s.entries, s.ranges, s.fast_batches, s.slow_batches) == (1, 1, 100, 0)
    assert s.admitted == 10_000 and s.duplicates == 0


def test_increasing_batch_with_holes_takes_fast_path() -> None:
    d = Dedup()
    assert d.admit(EX, "BHP", 1, arr(1, 2, 5, 6, 9), now_us=1).all()
    assert d.admit(EX, "BHP", 1, arr(10, 12), now_us=2).all()
    assert d.ranges(EX, "BHP", 1) == [(1, 2), (5, 6), (9, 10), (12, 12)]
    assert d.stats().slow_batches == 0 and d.stats().ranges == 4


def test_fast_path_accepts_views_and_other_integer_dtypes() -> None:
    d = Dedup()
    assert d.admit(EX, "BHP", 1, np.arange(1, 6, dtype=np.int32), now_us=1).all()
    assert d.admit(EX, "BHP", 1, np.arange(0, 60, dtype=np.int64)[6:20], now_us=2).all()
    assert d.admit(EX, "BHP", 1, np.arange(20, 40, dtype=np.int64)[::2], now_us=3).all()  # strided
    assert d.ranges(EX, "BHP", 1) == [(1, 20), *((s, s) for s in range(22, 40, 2))]
    assert d.stats().slow_batches == 0


def test_redelivered_batch_is_rejected_whole() -> None:
    d = Dedup()
    d.admit(EX, "BHP", 1, arr(1, 2, 3), now_us=1)
    assert not d.admit(EX, "BHP", 1, arr(1, 2, 3), now_us=2).any()
    assert d.stats().duplicates == 3


def test_late_seq_filling_a_hole_is_admitted_and_closes_it() -> None:
    d = Dedup()
    d.admit(EX, "BHP", 1, arr(1, 2, 4, 5), now_us=1)
    assert d.admit(EX, "BHP", 1, arr(3, 4, 6), now_us=2).tolist() == [True, False, True]
    assert d.ranges(EX, "BHP", 1) == [(1, 6)]


def test_repeat_within_one_batch_admitted_once() -> None:
    d = Dedup()
    assert d.admit(EX, "BHP", 1, arr(7, 3, 7, 3, 8), now_us=1).tolist() == [True, True, False, False, True]
    assert d.ranges(EX, "BHP", 1) == [(3, 3), (7, 8)]


def test_sessions_symbols_and_exchanges_are_separate_identities() -> None:
    d = Dedup()
    for ex, sym, session in [("ASX", "BHP", 1), ("ASX", "BHP", 2), ("ASX", "CBA", 1), ("SIM", "BHP", 1)]:
        assert d.admit(ex, sym, session, arr(1, 2), now_us=1).all()
    assert d.stats().entries == 4


def test_empty_batch_admits_nothing_and_creates_no_entry() -> None:
    d = Dedup()
    assert len(d.admit(EX, "BHP", 1, arr(), now_us=1)) == 0
    assert d.stats().entries == 0


def test_constructor_rejects_nonsense_bounds() -> None:
    for kwargs in ({"max_streams": 0}, {"max_ranges_per_stream": 0}, {"max_age_us": -1}):
        with pytest.raises(ValueError):
            Dedup(**kwargs)


# ---------------------------------------------------------------------------- bounds


def test_least_recently_used_stream_evicted_beyond_max_streams() -> None:
    d = Dedup(max_streams=2)
    d.admit(EX, "A", 1, arr(1), now_us=1)
    d.admit(EX, "B", 1, arr(1), now_us=2)
    d.admit(EX, "A", 1, arr(2), now_us=3)  # A is now the most recently used
    d.admit(EX, "C", 1, arr(1), now_us=4)
    assert d.ranges(EX, "B", 1) == []
    assert d.ranges(EX, "A", 1) == [(1, 2)]
    assert d.stats().evicted_lru == 1 and d.stats().entries == 2
    # The price of eviction, documented: an old duplicate of B is admitted again.
    assert d.admit(EX, "B", 1, arr(1), now_us=5).all()


def test_streams_untouched_for_longer_than_max_age_are_evicted() -> None:
    d = Dedup(max_age_us=100)
    d.admit(EX, "A", 1, arr(1), now_us=1_000)
    d.admit(EX, "B", 1, arr(1), now_us=1_050)
    assert d.evict(now_us=1_100) == 0  # A is exactly max_age old: kept
    assert d.evict(now_us=1_101) == 1
    assert d.ranges(EX, "A", 1) == [] and d.ranges(EX, "B", 1) == [(1, 1)]
    assert d.stats().evicted_age == 1


def test_touching_a_stream_keeps_it_young() -> None:
    d = Dedup(max_age_us=100)
    d.admit(EX, "A", 1, arr(1), now_us=1_000)
    d.admit(EX, "A", 1, arr(1), now_us=1_090)  # a duplicate still touches the key
    assert d.evict(now_us=1_150) == 0


def test_age_order_holds_when_clock_steps_back() -> None:
    d = Dedup(max_age_us=100)
    d.admit(EX, "A", 1, arr(1), now_us=1_000)
    d.admit(EX, "B", 1, arr(1), now_us=900)  # stamped no older than anything seen before
    assert d.evict(now_us=1_100) == 0
    assert d.evict(now_us=1_101) == 2


def test_fragmented_stream_evicted_whole_not_merged() -> None:
    d = Dedup(max_ranges_per_stream=3)
    d.admit(EX, "BHP", 1, arr(1, 3, 5), now_us=1)
    assert d.stats().entries == 1
    assert d.admit(EX, "BHP", 1, arr(7), now_us=2).all()  # the seq was new: still admitted
    assert d.ranges(EX, "BHP", 1) == [] and d.stats().entries == 0
    s = d.stats()
    assert s.evicted_fragmented == 1 and s.ranges == 0
    # Nothing unseen was ever claimed seen: seq 2 and 4 are admitted, as are the forgotten ones.
    assert d.admit(EX, "BHP", 1, arr(2, 4, 1), now_us=3).all()


@settings(max_examples=100, deadline=None)
@given(
    touches=st.lists(st.tuples(st.sampled_from("ABCDEFG"), st.integers(1, 30)), min_size=1, max_size=60),
    max_streams=st.integers(1, 5),
)
def test_lru_bound_keeps_exactly_the_most_recently_used(
    touches: list[tuple[str, int]], max_streams: int
) -> None:
    d = Dedup(max_streams=max_streams)
    lru: OrderedDict[str, None] = OrderedDict()
    for now, (sym, seq) in enumerate(touches):
        d.admit(EX, sym, 1, arr(seq), now_us=now)
        lru[sym] = None
        lru.move_to_end(sym)
        while len(lru) > max_streams:
            lru.popitem(last=False)
        assert d.stats().entries == len(lru) <= max_streams
        assert {s for s in "ABCDEFG" if d.ranges(EX, s, 1)} == set(lru)


# ---------------------------------------------------------------------------- properties

identities = st.tuples(st.sampled_from(["BHP", "CBA"]), st.integers(1, 2), st.integers(1, 40))


def _groups(batch: list[tuple[str, int, int]]) -> dict[tuple[str, int], list[int]]:
    groups: dict[tuple[str, int], list[int]] = {}
    for sym, session, seq in batch:
        groups.setdefault((sym, session), []).append(seq)
    return groups


def _run(d: Dedup, deliveries: list[tuple[str, int, int]], cuts: list[int], now: int = 0) -> list[bool]:
    """Feed deliveries split at ``cuts`` (grouped per key, like the ingest); return admits in order."""
    admitted: dict[tuple[str, int, int], list[bool]] = {}
    bounds = sorted({c % (len(deliveries) + 1) for c in cuts} | {0, len(deliveries)})
    out: list[bool] = []
    for lo, hi in itertools.pairwise(bounds):
        batch = deliveries[lo:hi]
        for (sym, session), seqs in _groups(batch).items():
            mask = d.admit(EX, sym, session, arr(*seqs), now_us=now)
            for seq, ok in zip(seqs, mask.tolist(), strict=True):
                admitted.setdefault((sym, session, seq), []).append(ok)
        for ident in batch:  # back to arrival order
            out.append(admitted[ident].pop(0))
        now += 1
    return out


@settings(max_examples=300, deadline=None)
@given(deliveries=st.lists(identities, max_size=120), cuts=st.lists(st.integers(0, 200), max_size=10))
def test_admits_each_identity_once_across_any_batch_split(
    deliveries: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    d = Dedup()
    out = _run(d, deliveries, cuts)
    seen: set[tuple[str, int, int]] = set()
    expected = []
    for ident in deliveries:
        expected.append(ident not in seen)
        seen.add(ident)
    assert out == expected
    # The interval sets hold exactly the admitted seqs, as sorted, disjoint, non-adjacent ranges.
    for sym in ("BHP", "CBA"):
        for session in (1, 2):
            ranges = d.ranges(EX, sym, session)
            assert {s for lo, hi in ranges for s in range(lo, hi + 1)} == {
                seq for (y, n, seq) in seen if (y, n) == (sym, session)
            }
            assert all(hi + 1 < lo for (_, hi), (lo, _) in itertools.pairwise(ranges))
    assert d.stats().ranges == sum(len(d.ranges(EX, y, n)) for y in ("BHP", "CBA") for n in (1, 2))


@settings(max_examples=200, deadline=None)
@given(
    deliveries=st.lists(identities, max_size=120),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    max_ranges=st.integers(1, 6),
)
def test_fragmentation_bound_holds_and_never_rejects_an_unseen_seq(
    deliveries: list[tuple[str, int, int]], cuts: list[int], max_ranges: int
) -> None:
    d = Dedup(max_ranges_per_stream=max_ranges)
    out = _run(d, deliveries, cuts)
    seen: set[tuple[str, int, int]] = set()
    for ident, ok in zip(deliveries, out, strict=True):
        if ident not in seen:
            assert ok  # eviction may forget, but never claims an unseen seq was seen
        seen.add(ident)
    for sym in ("BHP", "CBA"):
        for session in (1, 2):
            assert len(d.ranges(EX, sym, session)) <= max_ranges


@settings(max_examples=300, deadline=None)
@given(
    deliveries=st.lists(identities, max_size=120),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    crash_at=st.integers(0, 120),
)
def test_restore_then_admit_gives_same_result_as_uninterrupted(
    deliveries: list[tuple[str, int, int]], cuts: list[int], crash_at: int
) -> None:
    crash_at = min(crash_at, len(deliveries))
    before, after = deliveries[:crash_at], deliveries[crash_at:]
    straight = Dedup()
    expected = _run(straight, deliveries, [crash_at])

    first_life = Dedup()
    landed = [ident for ident, ok in zip(before, _run(first_life, before, cuts), strict=True) if ok]
    second_life = Dedup()
    for (sym, session), seqs in _groups(landed).items():
        second_life.restore(EX, sym, session, arr(*seqs), now_us=1_000)
    assert _run(second_life, after, cuts, now=1_001) == expected[crash_at:]


def test_restore_unions_with_what_the_key_already_holds() -> None:
    d = Dedup()
    d.admit(EX, "BHP", 1, arr(1, 2), now_us=1)
    d.restore(EX, "BHP", 1, arr(5, 4, 4), now_us=2)
    d.restore(EX, "BHP", 1, arr(), now_us=2)
    assert d.ranges(EX, "BHP", 1) == [(1, 2), (4, 5)]
    assert d.admit(EX, "BHP", 1, arr(3, 4, 6), now_us=3).tolist() == [True, False, True]


def test_restore_respects_the_fragmentation_bound() -> None:
    d = Dedup(max_ranges_per_stream=2)
    d.restore(EX, "BHP", 1, arr(1, 3, 5), now_us=1)
    assert d.stats().entries == 0 and d.stats().evicted_fragmented == 1
