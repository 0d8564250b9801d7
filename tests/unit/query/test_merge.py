"""The hybrid read rule: live rows at or past the snapshot's offsets, each (partition, offset) once."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.live_protocol import PartitionLive
from k2.query.merge import LiveSide, merge_live


def rows(pairs: list[tuple[int, int]]) -> pa.Table:
    return pa.table(
        {
            "kafka_partition": pa.array([p for p, _ in pairs], pa.int32()),
            "kafka_offset": pa.array([o for _, o in pairs], pa.int64()),
        }
    )


def offsets(tables: list[pa.Table]) -> list[tuple[int, int]]:
    out = []
    for t in tables:
        out += zip(t["kafka_partition"].to_pylist(), t["kafka_offset"].to_pylist(), strict=True)
    return sorted(out)


def test_live_rows_below_the_snapshot_offset_are_left_to_the_snapshot() -> None:
    side = LiveSide(rows([(0, o) for o in range(10, 20)]), {0: PartitionLive(floor=10, consumed=20)})

    merged = merge_live({0: 15}, [side])

    assert offsets(merged.rows) == [(0, o) for o in range(15, 20)]
    assert merged.live_from == {0: 15}
    assert merged.unreadable == {}


def test_a_partition_the_snapshot_has_never_stored_starts_at_zero() -> None:
    side = LiveSide(rows([(3, 0), (3, 1)]), {3: PartitionLive(floor=0, consumed=2)})

    merged = merge_live({}, [side])

    assert offsets(merged.rows) == [(3, 0), (3, 1)]
    assert merged.live_from == {3: 0}


def test_a_snapshot_older_than_the_buffer_floor_is_reported_not_answered_short() -> None:
    # The buffer released rows 10..14 (their commit is visible) but S was pinned before that commit.
    side = LiveSide(rows([(0, o) for o in range(15, 20)]), {0: PartitionLive(floor=15, consumed=20)})

    merged = merge_live({0: 10}, [side])

    assert merged.unreadable == {0: (10, 15)}
    assert offsets(merged.rows) == [(0, o) for o in range(15, 20)]


def test_two_owners_of_one_partition_during_a_handover_give_each_offset_once() -> None:
    # The old owner still holds 10..17 (uncommitted); the new one re-read from S = 10 and got to 25.
    old = LiveSide(rows([(0, o) for o in range(10, 18)]), {0: PartitionLive(floor=10, consumed=18)})
    new = LiveSide(rows([(0, o) for o in range(10, 25)]), {0: PartitionLive(floor=10, consumed=25)})

    for order in ([old, new], [new, old]):
        merged = merge_live({0: 10}, order)
        assert offsets(merged.rows) == [(0, o) for o in range(10, 25)]


def test_an_older_owner_fills_what_a_newer_one_no_longer_holds() -> None:
    # New owner committed up to 20 (floor 20), S is older (15): the old owner still has 15..19.
    old = LiveSide(rows([(0, o) for o in range(15, 20)]), {0: PartitionLive(floor=15, consumed=20)})
    new = LiveSide(rows([(0, o) for o in range(20, 30)]), {0: PartitionLive(floor=20, consumed=30)})

    merged = merge_live({0: 15}, [new, old])

    assert offsets(merged.rows) == [(0, o) for o in range(15, 30)]
    assert merged.unreadable == {}


def test_rows_of_partitions_a_side_does_not_vouch_for_are_not_taken() -> None:
    side = LiveSide(rows([(0, 5), (1, 5)]), {0: PartitionLive(floor=0, consumed=6)})

    assert offsets(merge_live({}, [side]).rows) == [(0, 5)]


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(1, 60),
    commits=st.lists(st.integers(0, 60), max_size=6),
    read_at=st.integers(0, 6),
    pin_at=st.integers(0, 6),
    handover=st.booleans(),
)
def test_buffer_read_first_then_snapshot_pinned_gives_every_offset_exactly_once(
    total: int, commits: list[int], read_at: int, pin_at: int, handover: bool
) -> None:
    """Simulate one partition: offsets 0..total-1 consumed, commits land at increasing offsets, the
    buffer releases rows once their commit is visible. A reader reads the buffer after ``read_at``
    commits and pins the snapshot after ``pin_at >= read_at`` commits. With ``handover`` a second
    process re-reads from the last commit the first one saw and holds everything to the end."""
    points = sorted({min(c, total) for c in commits})
    pin_at = max(pin_at, read_at)
    floor_at_read = points[min(read_at, len(points)) - 1] if read_at and points else 0
    stored_at_pin = points[min(pin_at, len(points)) - 1] if pin_at and points else 0

    sides = [
        LiveSide(
            rows([(0, o) for o in range(floor_at_read, total)]),
            {0: PartitionLive(floor=floor_at_read, consumed=total)},
        )
    ]
    if handover:
        sides.append(
            LiveSide(
                rows([(0, o) for o in range(floor_at_read, total + 5)]),
                {0: PartitionLive(floor=floor_at_read, consumed=total + 5)},
            )
        )
        total += 5
    history = [(0, o) for o in range(stored_at_pin)]

    merged = merge_live({0: stored_at_pin} if stored_at_pin else {}, sides)

    assert merged.unreadable == {}
    assert sorted(history + offsets(merged.rows)) == [(0, o) for o in range(total)]
