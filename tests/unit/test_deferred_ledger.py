"""Deferred ledger: shed offset ranges merge, split and survive a restart without losing a record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.deferred_ledger import DeferredLedger, DeferredRange

T = "trades"
T3 = frozenset({"tier3"})
T23 = frozenset({"tier2", "tier3"})
LOW = frozenset({"low"})


def spans(
    ledger: DeferredLedger, topic: str = T, partition: int = 0
) -> list[tuple[int, int, frozenset[str]]]:
    return [(r.first, r.last, r.classes) for r in ledger.ranges(topic, partition)]


# -- add ------------------------------------------------------------------------------------------


def test_first_range_is_recorded_as_given() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 100, 199, {"tier3"}, 40, 1000.5)

    assert ledger.ranges(T, 0) == [DeferredRange(100, 199, T3, 40, 1000.5)]
    assert ledger.partitions() == [(T, 0)]
    assert ledger.pending() == (40, 1000.5)


def test_consecutive_batches_at_one_level_coalesce_into_one_range_with_exact_count() -> None:
    ledger = DeferredLedger()
    for batch in range(1000):
        ledger.add(T, 3, batch * 500, batch * 500 + 499, {"tier3"}, 17, 1000.0 + batch)

    assert ledger.ranges(T, 3) == [DeferredRange(0, 499_999, T3, 17_000, 1000.0)]


def test_adjacent_range_added_before_an_existing_one_merges_too() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 10, 19, {"tier3"}, 5, 2.0)
    ledger.add(T, 0, 0, 9, {"tier3"}, 3, 1.0)

    assert ledger.ranges(T, 0) == [DeferredRange(0, 19, T3, 8, 1.0)]


def test_a_range_filling_a_hole_joins_both_neighbours() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 1, 3.0)
    ledger.add(T, 0, 20, 29, {"tier3"}, 2, 1.0)
    ledger.add(T, 0, 10, 19, {"tier3"}, 4, 2.0)

    assert ledger.ranges(T, 0) == [DeferredRange(0, 29, T3, 7, 1.0)]


def test_adjacent_ranges_with_different_classes_stay_apart() -> None:
    # Merging them into {tier2, tier3} would make a backfill land the tier-2 messages of the
    # first range, which were landed live, a second time.
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 99, {"tier3"}, 10, 1.0)
    ledger.add(T, 0, 100, 199, {"tier2", "tier3"}, 30, 2.0)

    assert spans(ledger) == [(0, 99, T3), (100, 199, T23)]
    assert ledger.pending() == (40, 1.0)


def test_ranges_with_a_gap_between_them_stay_apart() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 1, 1.0)
    ledger.add(T, 0, 11, 20, {"tier3"}, 1, 1.0)

    assert spans(ledger) == [(0, 9, T3), (11, 20, T3)]


def test_overlapping_add_with_the_same_classes_merges_and_sums_counts() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 5, 2.0)
    ledger.add(T, 0, 5, 14, {"tier3"}, 5, 1.0)

    assert ledger.ranges(T, 0) == [DeferredRange(0, 14, T3, 10, 1.0)]


def test_overlap_of_different_classes_gets_their_union_and_the_rest_keeps_its_own() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 10, 1.0)
    ledger.add(T, 0, 5, 14, {"tier2"}, 10, 2.0)

    assert spans(ledger) == [(0, 4, T3), (5, 9, T23), (10, 14, frozenset({"tier2"}))]
    # Each range contributes pro rata to the pieces it covers: 5 + (5 + 5) + 5.
    assert [r.count for r in ledger.ranges(T, 0)] == [5, 10, 5]
    assert [r.since for r in ledger.ranges(T, 0)] == [1.0, 1.0, 2.0]


def test_partitions_and_topics_are_independent() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 1, 1.0)
    ledger.add(T, 1, 10, 19, {"tier3"}, 1, 1.0)
    ledger.add("quotes", 0, 10, 19, {"tier3"}, 1, 1.0)

    assert spans(ledger, T, 0) == [(0, 9, T3)]
    assert ledger.partitions() == [("quotes", 0), (T, 0), (T, 1)]


@pytest.mark.parametrize(
    ("first", "last", "classes", "count"),
    [(10, 9, {"tier3"}, 1), (-1, 5, {"tier3"}, 1), (0, 5, set(), 1), (0, 5, {"tier3"}, -1)],
)
def test_invalid_ranges_are_rejected(first: int, last: int, classes: set[str], count: int) -> None:
    with pytest.raises(ValueError, match="invalid deferred range"):
        DeferredLedger().add(T, 0, first, last, classes, count, 1.0)


# -- remove ---------------------------------------------------------------------------------------


def test_removing_a_whole_range_forgets_it_and_its_partition() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 99, {"tier3"}, 10, 1.0)

    ledger.remove(T, 0, 0, 99)

    assert ledger.ranges(T, 0) == [] and ledger.partitions() == []
    assert ledger.pending() == (0, None)


def test_removing_a_prefix_keeps_the_rest_with_a_pro_rata_count_rounded_up() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 99, {"tier3"}, 10, 1.0)

    ledger.remove(T, 0, 0, 64)

    assert ledger.ranges(T, 0) == [DeferredRange(65, 99, T3, 4, 1.0)]  # 10 x 35/100 = 3.5 -> 4


def test_removing_a_prefix_with_the_landed_count_keeps_the_exact_remainder() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 99, {"tier3"}, 10, 1.0)

    ledger.remove(T, 0, 0, 64, landed=9)  # the shed messages sat near the start

    assert ledger.ranges(T, 0) == [DeferredRange(65, 99, T3, 1, 1.0)]


def test_removing_the_middle_splits_a_range_in_two() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 99, {"tier3"}, 10, 1.0)

    ledger.remove(T, 0, 40, 59)

    assert ledger.ranges(T, 0) == [DeferredRange(0, 39, T3, 4, 1.0), DeferredRange(60, 99, T3, 4, 1.0)]


def test_a_piece_of_a_range_with_messages_never_reads_zero() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 999, {"tier3"}, 1, 1.0)

    ledger.remove(T, 0, 1, 998)

    assert [r.count for r in ledger.ranges(T, 0)] == [1, 1]
    assert ledger.pending()[0] > 0


def test_removal_spanning_several_ranges_cuts_the_outer_ones_only() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 10, 1.0)
    ledger.add(T, 0, 20, 29, {"tier2", "tier3"}, 10, 2.0)
    ledger.add(T, 0, 40, 49, {"tier3"}, 10, 3.0)

    ledger.remove(T, 0, 5, 44, landed=17)

    # 30 shed in the overlapped ranges, 17 landed: the 13 left split by span (5 and 5 offsets).
    assert ledger.ranges(T, 0) == [DeferredRange(0, 4, T3, 7, 1.0), DeferredRange(45, 49, T3, 7, 3.0)]


def test_removing_what_is_not_there_changes_nothing() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 10, 19, {"tier3"}, 5, 1.0)
    before = ledger.encode()

    ledger.remove(T, 0, 0, 9)
    ledger.remove(T, 0, 20, 30)
    ledger.remove(T, 1, 10, 19)
    ledger.remove("quotes", 0, 10, 19)

    assert ledger.encode() == before


def test_pending_reports_messages_and_the_oldest_since() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 0, 9, {"tier3"}, 3, 50.0)
    ledger.add(T, 1, 0, 9, {"low"}, 4, 20.0)
    ledger.add("quotes", 0, 0, 9, {"tier3"}, 5, 30.0)

    assert ledger.pending() == (12, 20.0)


# -- ownership: revoke, assign, commit ------------------------------------------------------------


def ledger_of(*entries: tuple[str, int, int, int]) -> DeferredLedger:
    ledger = DeferredLedger()
    for topic, partition, first, last in entries:
        ledger.add(topic, partition, first, last, {"tier3"}, 1, 1.0)
    return ledger


def test_drop_partitions_forgets_revoked_partitions_only() -> None:
    ledger = ledger_of((T, 0, 0, 9), (T, 1, 0, 9), ("quotes", 1, 0, 9))

    ledger.drop_partitions(T, [1, 7])

    assert ledger.partitions() == [("quotes", 1), (T, 0)]


def test_restrict_keeps_only_owned_partitions_in_a_copy() -> None:
    ledger = ledger_of((T, 0, 0, 9), (T, 1, 0, 9), ("quotes", 0, 0, 9))

    mine = ledger.restrict([(T, 1), ("quotes", 0), (T, 5)])

    assert mine.partitions() == [("quotes", 0), (T, 1)]
    assert len(ledger.partitions()) == 3


def test_assign_adopts_the_stored_ranges_of_newly_owned_partitions() -> None:
    mine = ledger_of((T, 0, 100, 109))
    stored = ledger_of((T, 0, 0, 9), (T, 1, 50, 59), (T, 2, 70, 79))

    mine = mine.overlay(stored, [(T, 1)])

    assert mine.partitions() == [(T, 0), (T, 1)]
    assert spans(mine, T, 0) == [(100, 109, T3)]  # not the stored view of a partition I own
    assert spans(mine, T, 1) == [(50, 59, T3)]


def test_commit_writes_owned_partitions_over_the_stored_ledger_and_keeps_the_rest() -> None:
    stored = ledger_of((T, 0, 0, 9), (T, 1, 50, 59), (T, 2, 70, 79))
    mine = ledger_of((T, 1, 60, 69))  # partition 0: all backfilled; partition 1: new range

    written = stored.overlay(mine, [(T, 0), (T, 1)])

    assert written.partitions() == [(T, 1), (T, 2)]  # the backfilled range does not come back
    assert spans(written, T, 1) == [(60, 69, T3)]
    assert spans(written, T, 2) == [(70, 79, T3)]
    assert spans(stored, T, 0) == [(0, 9, T3)]  # overlay returns a copy


def test_overlaying_a_ledger_with_itself_changes_nothing() -> None:
    ledger = ledger_of((T, 0, 0, 9), (T, 1, 50, 59))
    assert ledger.overlay(ledger, ledger.partitions()) == ledger


# -- storage: a restart ---------------------------------------------------------------------------


def test_ledger_carries_across_a_restart_and_backfill_continues_where_it_stopped() -> None:
    before = DeferredLedger()
    before.add(T, 0, 1_000_000, 1_049_999, {"tier3"}, 9_000, 1767225600.123)
    before.add(T, 0, 1_050_000, 1_059_999, {"tier2", "tier3"}, 4_000, 1767225660.5)
    before.add("reference", 2, 7, 7, {"low"}, 1, 1767225601.0)
    stored = before.encode()

    after = DeferredLedger().overlay(DeferredLedger.decode(stored), [(T, 0), ("reference", 2)])

    assert after == before
    assert after.pending() == (13_001, 1767225600.123)
    after.remove(T, 0, 1_000_000, 1_024_999, landed=4_500)
    assert after.ranges(T, 0)[0] == DeferredRange(1_025_000, 1_049_999, T3, 4_500, 1767225600.123)


def test_empty_ledger_round_trips() -> None:
    assert DeferredLedger.decode(DeferredLedger().encode()) == DeferredLedger()


def test_encoding_is_compact_json_with_a_version() -> None:
    ledger = DeferredLedger()
    ledger.add(T, 0, 100, 199, {"tier3", "tier2"}, 40, 1000.5)
    ledger.add(T, 0, 300, 300, {"tier3"}, 1, 1001.0)
    ledger.add("reference", 4, 7, 9, {"low"}, 3, 999.0)

    assert json.loads(ledger.encode()) == {
        "v": 1,
        "since0": 999_000,
        "classes": [["low"], ["tier2", "tier3"], ["tier3"]],
        "ranges": {
            "reference": {"4": [[7, 2, 3, 0, 0]]},
            T: {"0": [[100, 99, 40, 1500, 1], [101, 0, 1, 2000, 2]]},
        },
    }


def test_five_thousand_ranges_encode_in_about_150_kb() -> None:
    ledger = DeferredLedger()
    for p in range(6):
        for i in range(834):
            first = 10_000_000_000 + i * 200_000
            classes = {"tier2", "tier3"} if i % 2 else {"tier3"}
            ledger.add(T, p, first, first + 150_000, classes, 12_345, 1767225600.123 + 3.5 * i)

    text = ledger.encode()

    assert sum(len(ledger.ranges(T, p)) for p in range(6)) == 5004
    assert len(text.encode()) < 160_000
    assert DeferredLedger.decode(text) == ledger


_GOOD = {"v": 1, "since0": 0, "classes": [["tier3"]], "ranges": {"trades": {"0": [[5, 1, 1, 0, 0]]}}}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({**_GOOD, "v": 2}),
        json.dumps({"v": 1}),
        json.dumps({**_GOOD, "classes": ["tier3"]}),
        json.dumps({**_GOOD, "ranges": {"trades": {"0": [[5, -1, 1, 0, 0]]}}}),
        json.dumps({**_GOOD, "ranges": {"trades": {"0": [[5, 1, 1, 0, 0], [0, 1, 1, 0, 0]]}}}),
        json.dumps({**_GOOD, "ranges": {"trades": {"0": [[5, 1, 1, 0, 1]]}}}),
        json.dumps({**_GOOD, "ranges": {"trades": {"x": [[5, 1, 1, 0, 0]]}}}),
        json.dumps({**_GOOD, "ranges": {"trades": {"0": [[5, 1, 1]]}}}),
    ],
)
def test_a_corrupt_stored_ledger_is_refused_not_half_read(text: str) -> None:
    assert DeferredLedger.decode(json.dumps(_GOOD)).ranges(T, 0) == [DeferredRange(5, 6, T3, 1, 0.0)]
    with pytest.raises(ValueError):
        DeferredLedger.decode(text)


# -- the set-of-offsets model ---------------------------------------------------------------------

_classes = st.frozensets(st.sampled_from(["low", "tier2", "tier3"]), min_size=1)
_add = st.tuples(
    st.just("add"),
    st.integers(0, 1),  # partition
    st.integers(0, 60),  # first
    st.integers(0, 15),  # last - first
    _classes,
    st.integers(1, 20),  # count
    st.integers(0, 10**6).map(lambda ms: 1.7e9 + ms / 1000),  # since, millisecond precision
)
_remove = st.tuples(st.just("remove"), st.integers(0, 1), st.integers(0, 60), st.integers(0, 15))
_ops = st.lists(st.one_of(_add, _remove), max_size=60)

Model = dict[int, dict[int, tuple[frozenset[str], float]]]  # partition -> offset -> (classes, since)


def model_runs(offsets: dict[int, tuple[frozenset[str], float]]) -> list[tuple[int, int, frozenset[str]]]:
    """Maximal runs of consecutive offsets with equal classes."""
    runs: list[tuple[int, int, frozenset[str]]] = []
    for o in sorted(offsets):
        classes = offsets[o][0]
        if runs and runs[-1][1] == o - 1 and runs[-1][2] == classes:
            runs[-1] = (runs[-1][0], o, classes)
        else:
            runs.append((o, o, classes))
    return runs


@settings(max_examples=400, deadline=None)
@given(ops=_ops)
def test_any_adds_and_removes_equal_a_set_of_offsets_model(ops: list[tuple[Any, ...]]) -> None:
    ledger = DeferredLedger()
    model: Model = {0: {}, 1: {}}
    for op in ops:
        pending_before = ledger.pending()[0]
        if op[0] == "add":
            _, p, first, length, classes, count, since = op
            ledger.add(T, p, first, first + length, classes, count, since)
            for o in range(first, first + length + 1):
                old_classes, old_since = model[p].get(o, (frozenset(), since))
                model[p][o] = (old_classes | classes, min(old_since, since))
        else:
            _, p, first, length = op
            ledger.remove(T, p, first, first + length)
            for o in range(first, first + length + 1):
                model[p].pop(o, None)
            assert ledger.pending()[0] <= pending_before + 1  # at most one extra from a middle cut

        for p in (0, 1):
            assert spans(ledger, T, p) == model_runs(model[p])
            for r in ledger.ranges(T, p):
                assert r.count >= 1  # pending never reads zero while records are pending
                # "oldest pending" is never younger than the oldest shed message still pending
                assert r.since <= min(model[p][o][1] for o in range(r.first, r.last + 1))
        assert ledger.partitions() == [(T, p) for p in (0, 1) if model[p]]

    assert DeferredLedger.decode(ledger.encode()) == ledger


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.integers(1, 50), _classes, st.integers(1, 50), st.booleans()), min_size=1, max_size=40
    )
)
def test_counts_are_exact_while_ranges_only_merge(
    batches: list[tuple[int, frozenset[str], int, bool]],
) -> None:
    ledger = DeferredLedger()
    offset = 0
    for size, classes, count, gap in batches:
        offset += 5 if gap else 0
        ledger.add(T, 0, offset, offset + size - 1, classes, count, 1.0)
        offset += size

    assert ledger.pending()[0] == sum(count for _, _, count, _ in batches)
