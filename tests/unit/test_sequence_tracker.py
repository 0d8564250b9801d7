"""SequenceTracker: classification, gap records, bounds, persistence contract and restore.

Example tests pin each behaviour by name; a rule-based state machine then drives random streams
(drops, duplicates, reorders, new sessions, expiry, persistence and restarts) against a naive
per-seq reference model and an uninterrupted tracker.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from k2.sequence_tracker import Gap, GapStatus, SeqKind, SequenceTracker

EX = "SIM"
K = SeqKind


def arr(*seqs: int) -> np.ndarray:
    return np.array(seqs, dtype=np.int64)


def gap(
    first: int,
    last: int,
    detected_at: int,
    status: GapStatus = "open",
    filled_at: int | None = None,
    *,
    symbol: str = "BHP",
    session: int = 1,
) -> Gap:
    return Gap(EX, symbol, session, first, last, detected_at, status, filled_at)


def kinds(*ks: SeqKind) -> list[int]:
    return [int(k) for k in ks]


# ---------------------------------------------------------------------------- classification


def test_in_order_batch_is_kept_and_takes_fast_path() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1), now_us=1)
    v = t.observe(EX, "BHP", 1, np.arange(2, 1002, dtype=np.int64), now_us=2)
    assert v.keep.all() and len(v.keep) == 1000
    assert (v.kinds == K.IN_ORDER).all()
    assert v.counts.in_order == 1000 and v.new_gaps == 0
    assert t.stats().fast_batches == 1
    assert t.next_seq(EX, "BHP", 1) == 1002
    assert t.open_gaps() == [] and t.gaps(EX, "BHP", 1) == []


def test_fast_path_accepts_views_and_other_integer_dtypes() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1), now_us=1)
    v = t.observe(EX, "BHP", 1, np.arange(2, 6, dtype=np.int32), now_us=2)
    view = np.arange(0, 60, dtype=np.int64)[6:20]  # 6..19, a slice of a larger column
    w = t.observe(EX, "BHP", 1, view, now_us=3)
    assert v.keep.all() and w.keep.all()
    assert t.stats().fast_batches == 2 and t.next_seq(EX, "BHP", 1) == 20


def test_large_batch_with_gaps_is_classified_run_by_run() -> None:
    t = SequenceTracker()
    seqs = np.concatenate([np.arange(1, 1001), np.arange(1500, 3001), [1200, 1200, 3001]]).astype(np.int64)
    v = t.observe(EX, "BHP", 1, seqs, now_us=1)
    assert v.kinds[0] == K.FIRST and v.kinds[1000] == K.GAP_THEN_ACCEPT
    assert v.kinds[-3:].tolist() == kinds(K.LATE, K.DUPLICATE, K.IN_ORDER)
    assert v.counts.in_order == len(seqs) - 4
    assert t.open_gaps() == [gap(1001, 1199, 1), gap(1201, 1499, 1)]
    assert t.next_seq(EX, "BHP", 1) == 3002


def test_first_message_is_first_and_not_a_gap_when_seq_is_one() -> None:
    t = SequenceTracker()
    v = t.observe(EX, "BHP", 1, arr(1, 2, 3), now_us=5)
    assert v.kinds.tolist() == kinds(K.FIRST, K.IN_ORDER, K.IN_ORDER)
    assert v.keep.all() and v.counts.first == 1 and v.new_gaps == 0
    assert t.open_gaps() == []


def test_first_message_above_one_records_gap_from_one() -> None:
    t = SequenceTracker()
    v = t.observe(EX, "BHP", 1, arr(5, 6), now_us=7)
    assert v.kinds.tolist() == kinds(K.FIRST, K.IN_ORDER)
    assert v.keep.all() and v.new_gaps == 1
    assert t.open_gaps() == [gap(1, 4, 7)]


def test_gap_then_accept_records_open_gap_and_keeps_message() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 2), now_us=1)
    v = t.observe(EX, "BHP", 1, arr(6, 7), now_us=9)
    assert v.kinds.tolist() == kinds(K.GAP_THEN_ACCEPT, K.IN_ORDER)
    assert v.keep.all() and v.new_gaps == 1 and v.counts.gap_then_accept == 1
    assert t.gaps(EX, "BHP", 1) == [gap(3, 5, 9)]
    assert t.next_seq(EX, "BHP", 1) == 8


def test_late_arrival_fills_gap_partially() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 10), now_us=100)
    v = t.observe(EX, "BHP", 1, arr(5), now_us=200)
    assert v.kinds.tolist() == kinds(K.LATE) and v.keep.all() and v.counts.late == 1
    assert t.gaps(EX, "BHP", 1) == [
        gap(2, 4, 100),
        gap(5, 5, 100, "filled", 200),
        gap(6, 9, 100),
    ]
    assert t.open_gaps() == [gap(2, 4, 100), gap(6, 9, 100)]


def test_late_arrival_at_gap_edges_shrinks_it() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 10), now_us=100)
    t.observe(EX, "BHP", 1, arr(2, 9), now_us=200)
    assert t.open_gaps() == [gap(3, 8, 100)]
    assert [g.status for g in t.gaps(EX, "BHP", 1)] == ["filled", "open", "filled"]


def test_late_arrivals_filling_a_gap_in_order_merge_into_one_filled_record() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 6), now_us=100)
    t.observe(EX, "BHP", 1, arr(2, 3), now_us=200)
    t.observe(EX, "BHP", 1, arr(5, 4), now_us=300)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 5, 100, "filled", 300)]
    assert t.open_gaps() == []


def test_filled_records_of_different_gaps_stay_apart() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 3), now_us=100)  # gap [2,2] detected at 100
    t.observe(EX, "BHP", 1, arr(5), now_us=200)  # gap [4,4] detected at 200
    t.observe(EX, "BHP", 1, arr(2, 4), now_us=300)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 100, "filled", 300), gap(4, 4, 200, "filled", 300)]


def test_duplicate_dropped_and_counted() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 2, 3), now_us=1)
    v = t.observe(EX, "BHP", 1, arr(2, 4, 4, 1), now_us=2)
    assert v.kinds.tolist() == kinds(K.DUPLICATE, K.IN_ORDER, K.DUPLICATE, K.DUPLICATE)
    assert v.keep.tolist() == [False, True, False, False]
    assert not v.dlq.any()
    assert v.counts.duplicate == 3 and t.stats().duplicates == 3


def test_late_arrival_delivered_twice_is_kept_once() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 4), now_us=1)
    v = t.observe(EX, "BHP", 1, arr(3, 3), now_us=2)
    assert v.kinds.tolist() == kinds(K.LATE, K.DUPLICATE)
    assert v.keep.tolist() == [True, False]


def test_reset_is_not_a_gap() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 20240102, arr(1, 2, 3), now_us=1)
    v = t.observe(EX, "BHP", 20240103, arr(1, 2), now_us=2)
    assert v.kinds.tolist() == kinds(K.RESET, K.IN_ORDER)
    assert v.keep.all() and v.new_gaps == 0 and v.counts.reset == 1
    assert t.open_gaps() == []
    assert t.stats().resets == 1


def test_reset_above_one_records_gap_in_new_session() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1), now_us=1)
    v = t.observe(EX, "BHP", 2, arr(4), now_us=2)
    assert v.kinds.tolist() == kinds(K.RESET) and v.new_gaps == 1
    assert t.open_gaps() == [gap(1, 3, 2, session=2)]


def test_older_retained_session_is_judged_against_its_own_state() -> None:
    t = SequenceTracker(max_sessions=2)
    t.observe(EX, "BHP", 1, arr(1, 2, 4), now_us=1)
    t.observe(EX, "BHP", 2, arr(1), now_us=2)
    v = t.observe(EX, "BHP", 1, arr(3, 5, 2), now_us=3)
    assert v.kinds.tolist() == kinds(K.LATE, K.IN_ORDER, K.DUPLICATE)
    assert t.next_seq(EX, "BHP", 1) == 6 and t.next_seq(EX, "BHP", 2) == 2


def test_session_older_than_retained_is_stale_and_sent_to_dlq() -> None:
    t = SequenceTracker(max_sessions=2)
    for session in (1, 2, 3):
        t.observe(EX, "BHP", session, arr(1), now_us=session)
    v = t.observe(EX, "BHP", 1, arr(2, 3), now_us=9)
    assert v.kinds.tolist() == kinds(K.STALE, K.STALE)
    assert not v.keep.any() and v.dlq.all() and v.counts.stale == 2
    assert t.next_seq(EX, "BHP", 1) is None
    assert t.stats().stale == 2


def test_unknown_session_older_than_newest_is_stale_even_with_room() -> None:
    t = SequenceTracker(max_sessions=3)
    t.observe(EX, "BHP", 5, arr(1), now_us=1)
    v = t.observe(EX, "BHP", 4, arr(1), now_us=2)
    assert v.kinds.tolist() == kinds(K.STALE)
    assert t.next_seq(EX, "BHP", 4) is None


def test_symbols_and_exchanges_are_tracked_apart() -> None:
    t = SequenceTracker()
    t.observe("ASX", "BHP", 1, arr(1, 2), now_us=1)
    v = t.observe("SIM", "BHP", 1, arr(1), now_us=1)
    w = t.observe("ASX", "CBA", 1, arr(3), now_us=1)
    assert v.kinds.tolist() == kinds(K.FIRST)
    assert w.kinds.tolist() == kinds(K.FIRST)
    assert t.open_gaps() == [Gap("ASX", "CBA", 1, 1, 2, 1, "open")]


def test_empty_batch_changes_nothing() -> None:
    t = SequenceTracker()
    v = t.observe(EX, "BHP", 1, arr(), now_us=1)
    assert len(v.keep) == 0 and v.counts.in_order == 0
    assert t.next_seq(EX, "BHP", 1) is None and t.take_dirty() == []


def test_seq_below_one_is_rejected() -> None:
    t = SequenceTracker()
    with pytest.raises(ValueError, match="seq must be >= 1"):
        t.observe(EX, "BHP", 1, arr(0, 1), now_us=1)


def test_constructor_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        SequenceTracker(max_sessions=0)
    with pytest.raises(ValueError):
        SequenceTracker(max_open_gaps=-1)


def test_stats_add_up_across_calls() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 2, 5, 3, 3), now_us=1)
    t.observe(EX, "BHP", 1, arr(6, 7), now_us=2)
    s = t.stats()
    assert (s.first, s.in_order, s.gaps, s.late, s.duplicates) == (1, 3, 1, 1, 1)
    assert s.open_gap_count == 1 and s.fast_batches == 1 and s.slow_batches == 1


# ---------------------------------------------------------------------------- expiry and bounds


def test_expire_marks_old_open_gaps_lost() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 3), now_us=100)
    t.observe(EX, "BHP", 1, arr(6), now_us=500)
    assert t.expire(now_us=1_000, max_age_us=600) == 1
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 100, "lost"), gap(4, 5, 500)]
    assert t.stats().lost == 1 and t.stats().open_gap_count == 1
    assert t.expire(now_us=1_000, max_age_us=600) == 0


def test_gap_exactly_max_age_old_is_not_expired() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 3), now_us=100)
    assert t.expire(now_us=700, max_age_us=600) == 0
    assert t.expire(now_us=701, max_age_us=600) == 1


def test_lost_seq_arriving_late_is_lost_late_and_sent_to_dlq() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 4), now_us=100)
    t.expire(now_us=10_000, max_age_us=1)
    v = t.observe(EX, "BHP", 1, arr(3, 2, 5), now_us=10_001)
    assert v.kinds.tolist() == kinds(K.LOST_LATE, K.LOST_LATE, K.IN_ORDER)
    assert v.keep.tolist() == [False, False, True]
    assert v.dlq.tolist() == [True, True, False]
    assert t.gaps(EX, "BHP", 1) == [gap(2, 3, 100, "lost")]
    assert t.stats().lost_late == 2


def test_max_open_gaps_marks_oldest_lost() -> None:
    t = SequenceTracker(max_open_gaps=2)
    t.observe(EX, "BHP", 1, arr(1, 3), now_us=10)
    t.observe(EX, "CBA", 1, arr(1, 3), now_us=20)
    t.observe(EX, "BHP", 1, arr(5), now_us=30)
    assert t.open_gaps() == [gap(4, 4, 30), gap(2, 2, 20, symbol="CBA")]
    assert t.gaps(EX, "BHP", 1)[0] == gap(2, 2, 10, "lost")
    assert t.stats().open_gap_count == 2


def test_open_gap_bound_still_picks_oldest_after_many_fills() -> None:
    # Thousands of filled reorders leave stale index entries behind; the bound must still find
    # the oldest live gap.
    t = SequenceTracker(max_open_gaps=3)
    t.observe(EX, "OLD", 1, arr(1, 3), now_us=0)
    seqs = []
    for i in range(3_000):
        base = 2 * i + 1
        seqs += [base + 1, base]
    t.observe(EX, "BHP", 1, arr(*seqs), now_us=1)
    assert t.open_gaps() == [gap(2, 2, 0, symbol="OLD")]
    for now, symbol in enumerate(("A", "B", "C"), start=2):
        t.observe(EX, symbol, 1, arr(2), now_us=now)
    assert [g.symbol for g in t.open_gaps()] == ["A", "B", "C"]
    assert t.gaps(EX, "OLD", 1) == [gap(2, 2, 0, "lost", symbol="OLD")]


def test_evicted_session_open_gaps_become_lost() -> None:
    t = SequenceTracker(max_sessions=2)
    t.observe(EX, "BHP", 1, arr(1, 3), now_us=1)
    t.take_dirty()
    t.observe(EX, "BHP", 2, arr(1), now_us=2)
    t.observe(EX, "BHP", 3, arr(1), now_us=3)
    assert t.next_seq(EX, "BHP", 1) is None
    assert t.open_gaps() == []
    assert t.take_dirty() == [(EX, "BHP", 1)]
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 1, "lost")]


# ---------------------------------------------------------------------------- persistence contract


def test_take_dirty_reports_each_change_once() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 2), now_us=1)
    assert t.take_dirty() == []  # no records changed
    t.observe(EX, "BHP", 1, arr(5), now_us=2)
    t.observe(EX, "CBA", 1, arr(1), now_us=2)
    assert t.take_dirty() == [(EX, "BHP", 1)]
    assert t.take_dirty() == []
    t.observe(EX, "BHP", 1, arr(3), now_us=3)
    assert t.take_dirty() == [(EX, "BHP", 1)]
    t.observe(EX, "BHP", 1, arr(3, 6), now_us=4)  # a duplicate and in order: no record change
    assert t.take_dirty() == []


def test_evicted_session_records_answerable_until_next_take_dirty() -> None:
    t = SequenceTracker(max_sessions=1)
    t.observe(EX, "BHP", 1, arr(1, 3), now_us=1)
    t.observe(EX, "BHP", 2, arr(1), now_us=2)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 1, "lost")]  # pending, not yet taken
    assert t.take_dirty() == [(EX, "BHP", 1)]
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 1, "lost")]  # taken: still answerable
    assert t.take_dirty() == []
    assert t.gaps(EX, "BHP", 1) == []


def test_evicting_clean_session_without_open_gaps_is_not_dirty() -> None:
    t = SequenceTracker(max_sessions=1)
    t.observe(EX, "BHP", 1, arr(1, 3, 2), now_us=1)
    t.take_dirty()
    t.observe(EX, "BHP", 2, arr(1), now_us=2)
    assert t.take_dirty() == []


# ---------------------------------------------------------------------------- restore


def test_restore_rebuilds_next_and_holes_as_open_gaps() -> None:
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(7, 1, 2, 5), records=[], now_us=50)
    assert t.next_seq(EX, "BHP", 1) == 8
    assert t.open_gaps() == [gap(3, 4, 50), gap(6, 6, 50)]
    assert t.take_dirty() == [(EX, "BHP", 1)]
    v = t.observe(EX, "BHP", 1, arr(8, 6, 5, 3), now_us=60)
    assert v.kinds.tolist() == kinds(K.IN_ORDER, K.LATE, K.DUPLICATE, K.LATE)


def test_restore_keeps_consistent_stored_records_and_is_clean() -> None:
    stored = [gap(2, 2, 10, "filled", 20), gap(3, 4, 10), gap(6, 6, 30, "lost")]
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(1, 2, 5, 7), records=stored, now_us=99)
    assert t.gaps(EX, "BHP", 1) == stored
    assert t.take_dirty() == []
    v = t.observe(EX, "BHP", 1, arr(6, 3), now_us=100)
    assert v.kinds.tolist() == kinds(K.LOST_LATE, K.LATE)


def test_restore_fills_stored_open_records_whose_seqs_landed() -> None:
    stored = [gap(2, 6, 10)]
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(1, 3, 4, 7), records=stored, now_us=99)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 10), gap(3, 4, 10, "filled", 99), gap(5, 6, 10)]
    assert t.take_dirty() == [(EX, "BHP", 1)]


def test_restore_reopens_unseen_part_of_filled_record() -> None:
    stored = [gap(2, 3, 10, "filled", 20)]
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(1, 2, 4), records=stored, now_us=99)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 10, "filled", 20), gap(3, 3, 10)]
    assert t.take_dirty() == [(EX, "BHP", 1)]


def test_restore_turns_landed_part_of_lost_record_into_filled() -> None:
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(1, 3, 5), records=[gap(2, 3, 10, "lost")], now_us=99)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 10, "lost"), gap(3, 3, 10, "filled", 99), gap(4, 4, 99)]


def test_restore_drops_records_beyond_stored_seqs_or_overlapping_or_of_other_keys() -> None:
    stored = [
        gap(2, 3, 10),
        gap(3, 4, 11),  # overlaps the previous record: only [4, 4] survives
        gap(6, 9, 12),  # beyond max(seen) = 5
        gap(2, 2, 13, symbol="CBA"),  # another key: ignored
    ]
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(1, 5), records=stored, now_us=99)
    assert t.gaps(EX, "BHP", 1) == [gap(2, 3, 10), gap(4, 4, 11)]
    assert t.take_dirty() == [(EX, "BHP", 1)]


def test_restore_with_no_seqs_leaves_session_unknown() -> None:
    t = SequenceTracker()
    t.restore(EX, "BHP", 1, arr(), records=[gap(1, 1, 1)], now_us=1)
    assert t.next_seq(EX, "BHP", 1) is None and t.take_dirty() == []


def test_restore_replaces_live_session_state() -> None:
    t = SequenceTracker()
    t.observe(EX, "BHP", 1, arr(1, 5), now_us=1)
    t.restore(EX, "BHP", 1, arr(1, 2, 3), records=[], now_us=2)
    assert t.open_gaps() == [] and t.stats().open_gap_count == 0
    assert t.next_seq(EX, "BHP", 1) == 4


def test_restore_beyond_max_sessions_evicts_oldest() -> None:
    t = SequenceTracker(max_sessions=2)
    for session in (1, 2, 3):
        t.restore(EX, "BHP", session, arr(1, 3), records=[], now_us=session)
    assert t.next_seq(EX, "BHP", 1) is None
    assert [g.session for g in t.open_gaps()] == [2, 3]
    assert (EX, "BHP", 1) in t.take_dirty()
    assert t.gaps(EX, "BHP", 1) == [gap(2, 2, 1, "lost")]


def test_restore_rejects_seq_below_one() -> None:
    with pytest.raises(ValueError):
        SequenceTracker().restore(EX, "BHP", 1, arr(0, 1), records=[], now_us=1)


def test_restore_then_observe_matches_uninterrupted_run() -> None:
    first, rest = [1, 2, 5, 9, 3, 10], [4, 6, 2, 7, 11, 8, 12]
    straight = SequenceTracker()
    straight.observe(EX, "BHP", 1, arr(*first), now_us=1)
    records = straight.gaps(EX, "BHP", 1)
    kept = [1, 2, 5, 9, 3, 10]
    restored = SequenceTracker()
    restored.restore(EX, "BHP", 1, arr(*kept), records=records, now_us=2)
    a = straight.observe(EX, "BHP", 1, arr(*rest), now_us=3)
    b = restored.observe(EX, "BHP", 1, arr(*rest), now_us=3)
    assert a.kinds.tolist() == b.kinds.tolist()
    assert straight.gaps(EX, "BHP", 1) == restored.gaps(EX, "BHP", 1)


# ---------------------------------------------------------------------------- open-gap bound property


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(1, 60), min_size=1, max_size=15), min_size=1, max_size=15),
    bound=st.integers(0, 4),
)
def test_open_gap_bound_holds_and_loses_only_the_oldest(batches: list[list[int]], bound: int) -> None:
    bounded = SequenceTracker(max_open_gaps=bound)
    free = SequenceTracker(max_open_gaps=10**9)
    for now, batch in enumerate(batches):
        a = bounded.observe(EX, "BHP", 1, arr(*batch), now_us=now)
        b = free.observe(EX, "BHP", 1, arr(*batch), now_us=now)
        assert bounded.stats().open_gap_count == len(bounded.open_gaps()) <= bound
        # Only seqs given up as lost are judged differently.
        records = bounded.gaps(EX, "BHP", 1)
        differs = a.kinds != b.kinds
        assert (a.kinds[differs] == K.LOST_LATE).all()
        assert np.isin(b.kinds[differs], [K.LATE, K.DUPLICATE]).all()
        assert set(arr(*batch)[differs].tolist()) <= _seqs(records, "lost")
        lost = [g for g in records if g.status == "lost"]
        still_open = [g for g in records if g.status == "open"]
        if lost and still_open:
            assert max(g.detected_at for g in lost) <= min(g.detected_at for g in still_open)
    # Both found the same seqs missing, whatever became of them.
    assert _seqs(bounded.gaps(EX, "BHP", 1)) == _seqs(free.gaps(EX, "BHP", 1))


def _seqs(records: list[Gap], status: str | None = None) -> set[int]:
    return {s for g in records if status in (None, g.status) for s in range(g.first_seq, g.last_seq + 1)}


# ---------------------------------------------------------------------------- state machine


class _Model:
    """A deliberately naive per-seq reference: sets and dicts, no ranges."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[str, list[int]] = defaultdict(list)  # retained, ascending
        self.next: dict[tuple[str, int], int] = {}
        self.open: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)  # seq -> detected_at
        self.lost: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.filled: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)  # seq -> detected_at
        self.evicted: set[tuple[str, int]] = set()

    def observe(self, sym: str, session: int, seq: int, now: int) -> SeqKind:
        retained = self.sessions[sym]
        key = (sym, session)
        if session not in retained:
            if retained and session < retained[-1]:
                return K.STALE
            kind = K.RESET if retained else K.FIRST
            retained.append(session)
            self.next[key] = 1
            while len(retained) > self.max_sessions:
                old = (sym, retained.pop(0))
                self.lost[old] |= set(self.open.pop(old, {}))
                self.evicted.add(old)
            self._advance(key, seq, now)
            return kind
        nxt = self.next[key]
        if seq == nxt:
            self.next[key] = seq + 1
            return K.IN_ORDER
        if seq > nxt:
            self._advance(key, seq, now)
            return K.GAP_THEN_ACCEPT
        if seq in self.open[key]:
            self.filled[key][seq] = self.open[key].pop(seq)
            return K.LATE
        return K.LOST_LATE if seq in self.lost[key] else K.DUPLICATE

    def _advance(self, key: tuple[str, int], seq: int, now: int) -> None:
        for s in range(self.next[key], seq):
            self.open[key][s] = now
        self.next[key] = seq + 1

    def expire(self, cutoff: int) -> int:
        marked = 0
        for key, missing in self.open.items():
            old = sorted(s for s, d in missing.items() if d < cutoff)
            marked += sum(1 for i, s in enumerate(old) if i == 0 or old[i - 1] != s - 1)
            for s in old:
                del missing[s]
                self.lost[key].add(s)
        return marked

    def restore(self, key: tuple[str, int], kept: set[int], records: list[Gap], now: int) -> None:
        """What a restore from ``kept`` rows and ``records`` must reconstruct, seq by seq."""
        top = max(kept)
        cover: dict[int, Gap] = {}
        for g in sorted(records, key=lambda g: (g.first_seq, g.last_seq)):
            for s in range(g.first_seq, min(g.last_seq, top) + 1):
                cover.setdefault(s, g)
        self.next[key] = top + 1
        self.open[key], self.lost[key], self.filled[key] = {}, set(), {}
        for s in range(1, top + 1):
            rec = cover.get(s)
            if s in kept:
                if rec is not None:
                    self.filled[key][s] = rec.detected_at
            elif rec is not None and rec.status == "lost":
                self.lost[key].add(s)
            else:
                self.open[key][s] = now if rec is None else rec.detected_at


SYMBOLS = ("BHP", "CBA")


class TrackerMachine(RuleBasedStateMachine):
    """Random producer/network/consumer, checked against the model after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000
        self.tracker = SequenceTracker(max_sessions=2, max_open_gaps=10**9)
        self.reference = SequenceTracker(max_sessions=2, max_open_gaps=10**9)  # never restarted
        self.diverged = False  # a restart from stale records: reference is no longer exact
        self.model = _Model(max_sessions=2)
        self.session = dict.fromkeys(SYMBOLS, 20240102)
        self.produced = dict.fromkeys(SYMBOLS, 0)
        self.wire: list[tuple[str, int, int]] = []
        self.held: list[tuple[str, int, int]] = []
        self.sent: list[tuple[str, int, int]] = []
        self.dropped: set[tuple[str, int, int]] = set()
        self.landed: set[tuple[str, int, int]] = set()
        self.dead_lettered: set[tuple[str, int, int]] = set()
        self.kept: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.store: dict[tuple[str, str, int], list[Gap]] = {}
        self.duplicates_expected = 0
        self.duplicates_seen = 0
        self.max_age = 10**9

    @initialize(max_age=st.integers(0, 80))
    def start(self, max_age: int) -> None:
        self.max_age = max_age  # the consumer expires gaps this old after every batch

    # -- producer and network

    @rule(
        sym=st.sampled_from(SYMBOLS),
        fates=st.lists(st.sampled_from(["send", "send", "send", "drop", "hold"]), min_size=1, max_size=12),
    )
    def emit(self, sym: str, fates: list[str]) -> None:
        """Produce the next seqs of ``sym``: sent, dropped (never delivered) or held back."""
        for fate in fates:
            self.produced[sym] += 1
            ident = (sym, self.session[sym], self.produced[sym])
            if fate == "drop":
                self.dropped.add(ident)
                continue
            self.sent.append(ident)
            (self.wire if fate == "send" else self.held).append(ident)

    @rule(sym=st.sampled_from(SYMBOLS), days=st.integers(1, 2))
    def new_session(self, sym: str, days: int) -> None:
        self.session[sym] += days
        self.produced[sym] = 0

    @precondition(lambda self: self.sent)
    @rule(i=st.integers(0, 10**6))
    def duplicate(self, i: int) -> None:
        self.wire.append(self.sent[i % len(self.sent)])

    @precondition(lambda self: len(self.wire) >= 2)
    @rule(i=st.integers(0, 10**6), j=st.integers(0, 10**6))
    def swap(self, i: int, j: int) -> None:
        i, j = i % len(self.wire), j % len(self.wire)
        self.wire[i], self.wire[j] = self.wire[j], self.wire[i]

    @precondition(lambda self: self.wire)
    @rule(i=st.integers(0, 10**6))
    def delay(self, i: int) -> None:
        self.wire.append(self.wire.pop(i % len(self.wire)))

    @precondition(lambda self: self.wire)
    @rule(i=st.integers(0, 10**6))
    def hold(self, i: int) -> None:
        """Delay a message for long: it comes back only on ``release`` (or ``drain``)."""
        self.held.append(self.wire.pop(i % len(self.wire)))

    @precondition(lambda self: self.held)
    @rule()
    def release(self) -> None:
        self.wire = self.held + self.wire
        self.held = []

    # -- consumer

    @precondition(lambda self: self.wire)
    @rule(k=st.integers(1, 25))
    def deliver(self, k: int) -> None:
        batch, self.wire = self.wire[:k], self.wire[k:]
        self._deliver(batch)

    def _deliver(self, batch: list[tuple[str, int, int]]) -> None:
        groups: dict[tuple[str, int], list[int]] = {}
        for sym, session, seq in batch:  # group by key, arrival order kept within a group
            groups.setdefault((sym, session), []).append(seq)
        for (sym, session), seqs in groups.items():
            expected = [self.model.observe(sym, session, s, self.now) for s in seqs]
            v = self.tracker.observe(EX, sym, session, arr(*seqs), now_us=self.now)
            assert v.kinds.tolist() == [int(k) for k in expected]
            assert v.keep.tolist() == [k not in (K.DUPLICATE, K.STALE, K.LOST_LATE) for k in expected]
            r = self.reference.observe(EX, sym, session, arr(*seqs), now_us=self.now)
            if not self.diverged:
                assert r.kinds.tolist() == v.kinds.tolist()
            for s, keep, kind in zip(seqs, v.keep.tolist(), expected, strict=True):
                ident = (sym, session, s)
                if kind not in (K.STALE, K.LOST_LATE):
                    # Kept exactly on the first delivery of each identity.
                    assert keep == (ident not in self.landed)
                    self.duplicates_expected += ident in self.landed
                if kind in (K.STALE, K.LOST_LATE):
                    self.dead_lettered.add(ident)
                if keep:
                    self.landed.add(ident)
                    self.kept[(sym, session)].add(s)
            self.duplicates_seen += v.counts.duplicate
        self.now += 1
        self.expire(self.max_age)

    @rule(dt=st.integers(1, 50))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule(age=st.integers(0, 80))
    def expire(self, age: int) -> None:
        marked = self.tracker.expire(self.now, age)
        assert marked == self.model.expire(self.now - age)
        self.reference.expire(self.now, age)

    # -- persistence and restart

    @rule()
    def persist(self) -> None:
        for key in self.tracker.take_dirty():
            self.store[key] = self.tracker.gaps(*key)
            sym, session = key[1], key[2]
            if (sym, session) in self.model.evicted:
                assert all(g.status != "open" for g in self.store[key])
                assert _seqs(self.store[key], "lost") == self.model.lost[(sym, session)]
        # Every change was reported: the store matches the live state of every retained session.
        for sym, sessions in self.model.sessions.items():
            for session in sessions:
                assert self.store.get((EX, sym, session), []) == self.tracker.gaps(EX, sym, session)

    @rule(persist_first=st.booleans())
    def restart(self, persist_first: bool) -> None:
        if persist_first:
            self.persist()
        elif self.tracker.take_dirty():
            self.diverged = True  # unpersisted record changes are lost with the process
        self.tracker = SequenceTracker(max_sessions=2, max_open_gaps=10**9)
        for sym, sessions in self.model.sessions.items():
            for session in sessions:
                records = self.store.get((EX, sym, session), [])
                kept = self.kept[(sym, session)]
                self.tracker.restore(EX, sym, session, arr(*kept), records, now_us=self.now)
                self.model.restore((sym, session), kept, records, self.now)

    @precondition(lambda self: self.wire or self.held)
    @rule()
    def drain(self) -> None:
        """Deliver everything still in flight; then the gaps are exactly what never landed."""
        self._deliver(self.wire + self.held)
        self.wire, self.held = [], []
        for sym, sessions in self.model.sessions.items():
            for session in sessions:
                kept = self.kept[(sym, session)]
                records = self.tracker.gaps(EX, sym, session)
                never_landed = set(range(1, max(kept) + 1)) - kept
                assert _seqs(records, "open") | _seqs(records, "lost") == never_landed
                # Open means never delivered - or dead-lettered as lost before a restart from
                # records that had not yet been persisted as lost.
                open_idents = {(sym, session, s) for s in _seqs(records, "open")}
                assert open_idents <= self.dropped | self.dead_lettered
                if not self.diverged:
                    assert open_idents <= self.dropped

    # -- invariants

    @invariant()
    def matches_model(self) -> None:
        open_by_seq = {
            (g.symbol, g.session, s): g.detected_at
            for g in self.tracker.open_gaps()
            for s in range(g.first_seq, g.last_seq + 1)
        }
        expected_open = {
            (sym, session, s): d
            for (sym, session), missing in self.model.open.items()
            if session in self.model.sessions[sym]
            for s, d in missing.items()
        }
        assert open_by_seq == expected_open
        assert self.tracker.stats().open_gap_count == len(self.tracker.open_gaps())
        for sym in SYMBOLS:
            for session in self.model.sessions[sym]:
                key = (sym, session)
                records = self.tracker.gaps(EX, sym, session)
                assert self.tracker.next_seq(EX, sym, session) == self.model.next[key]
                assert _seqs(records, "lost") == self.model.lost[key]
                filled = {s: g.detected_at for g in records if g.status == "filled" for s in _seqs([g])}
                assert filled == self.model.filled[key]
                # Records partition the seqs ever found missing: no seq in two records.
                assert sum(g.size for g in records) == len(_seqs(records))
                assert all(g.last_seq < self.model.next[key] for g in records)
            for sym_, session in self.model.evicted:
                if sym_ == sym:
                    assert self.tracker.next_seq(EX, sym, session) is None

    @invariant()
    def matches_uninterrupted_run(self) -> None:
        if not self.diverged:
            assert self.tracker.open_gaps() == self.reference.open_gaps()
            for sym, sessions in self.model.sessions.items():
                for session in sessions:
                    assert self.tracker.gaps(EX, sym, session) == self.reference.gaps(EX, sym, session)

    @invariant()
    def duplicates_counted(self) -> None:
        assert self.duplicates_seen == self.duplicates_expected


TrackerMachine.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tracker_state_machine = TrackerMachine.TestCase
