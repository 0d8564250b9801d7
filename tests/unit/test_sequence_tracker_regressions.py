"""Regressions in SequenceTracker, each run under a timeout so a return of the bug fails, not hangs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.sequence_tracker import SeqKind, SequenceTracker

K = SeqKind


def arr(*seqs: int) -> np.ndarray:
    return np.array(seqs, dtype=np.int64)


@pytest.mark.timeout(5)
def test_slow_path_with_a_run_boundary_right_after_an_accepted_run_terminates() -> None:
    # _observe_slow once looped forever here: after accepting the run 5,6 it jumped to the next
    # run boundary without advancing the run cursor past it.
    t = SequenceTracker()
    t.observe("SIM", "BHP", 1, arr(1, 2, 3), now_us=1)

    v = t.observe("SIM", "BHP", 1, arr(5, 6, 4, 7, 8, 2, 9), now_us=2)

    assert v.kinds.tolist() == [
        K.GAP_THEN_ACCEPT,
        K.IN_ORDER,
        K.LATE,
        K.IN_ORDER,
        K.IN_ORDER,
        K.DUPLICATE,
        K.IN_ORDER,
    ]
    assert v.keep.tolist() == [True, True, True, True, True, False, True]
    assert v.new_gaps == 1
    assert t.open_gaps() == []
    assert t.next_seq("SIM", "BHP", 1) == 10
    assert [(g.first_seq, g.last_seq, g.status) for g in t.gaps("SIM", "BHP", 1)] == [(4, 4, "filled")]


@pytest.mark.timeout(5)
def test_slow_path_first_batch_with_several_runs_terminates_and_classifies() -> None:
    t = SequenceTracker()

    v = t.observe("SIM", "BHP", 1, arr(3, 4, 1, 6, 7, 2, 5, 8), now_us=1)

    assert v.kinds.tolist() == [
        K.FIRST,
        K.IN_ORDER,
        K.LATE,
        K.GAP_THEN_ACCEPT,
        K.IN_ORDER,
        K.LATE,
        K.LATE,
        K.IN_ORDER,
    ]
    assert v.keep.all()
    assert t.open_gaps() == []


def _first_occurrence(seqs: list[int]) -> list[bool]:
    seen: set[int] = set()
    mask = []
    for s in seqs:
        mask.append(s not in seen)
        seen.add(s)
    return mask


@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(seqs=st.lists(st.integers(1, 200), max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_any_batching_terminates_and_keeps_exactly_the_first_occurrence_of_each_seq(
    seqs: list[int], cuts: list[int]
) -> None:
    t = SequenceTracker()
    bounds = sorted({0, len(seqs), *(c for c in cuts if c < len(seqs))})
    keep: list[bool] = []

    for now, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        keep += t.observe("SIM", "BHP", 1, np.array(seqs[lo:hi], dtype=np.int64), now_us=now).keep.tolist()

    assert keep == _first_occurrence(seqs)
    # Whatever has not arrived below the highest seq is exactly what is still open.
    top = max(seqs, default=0)
    missing = sorted(set(range(1, top + 1)) - set(seqs))
    open_seqs = [s for g in t.open_gaps() for s in range(g.first_seq, g.last_seq + 1)]
    assert open_seqs == missing
