"""LiveBuffer: the committer takes everything at once, rebalances drop whole partitions, reads copy."""

from __future__ import annotations

import pyarrow as pa

from k2.live_buffer import LiveBuffer


def rows(partition: int, offsets: range) -> pa.Table:
    n = len(offsets)
    return pa.table(
        {
            "symbol": pa.array(["BHP"] * n),
            "kafka_partition": pa.array([partition] * n, pa.int32()),
            "kafka_offset": pa.array(list(offsets), pa.int64()),
        }
    )


def offsets_of(table: pa.Table | None) -> list[tuple[int, int]]:
    assert table is not None
    return list(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True))


def test_take_swaps_out_every_table_and_leaves_the_buffer_empty() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(0, range(0, 3)), now=10.0)
    buf.append("quotes", rows(1, range(0, 2)), now=11.0)
    buf.append("trades", rows(0, range(3, 5)), now=12.0)

    content = buf.take()

    assert content.rows == 7
    assert offsets_of(content.table("trades")) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]
    assert offsets_of(content.table("quotes")) == [(1, 0), (1, 1)]
    assert content.table("reference_data") is None
    assert buf.rows == 0
    # Taken rows stay readable until their commit is visible.
    assert [offsets_of(c) for c in buf.read("trades")] == [[(0, 0), (0, 1), (0, 2)], [(0, 3), (0, 4)]]
    buf.release(content.token)
    assert buf.read("trades") == [] and buf.read("quotes") == []
    assert buf.take().rows == 0


def test_age_counts_from_the_oldest_append_and_resets_on_take() -> None:
    buf = LiveBuffer()
    assert buf.age(now=100.0) == 0.0

    buf.append("trades", rows(0, range(0, 1)), now=10.0)
    buf.append("trades", rows(0, range(1, 2)), now=15.0)
    assert buf.age(now=25.0) == 15.0

    buf.take()
    assert buf.age(now=30.0) == 0.0
    buf.append("trades", rows(0, range(2, 3)), now=40.0)
    assert buf.age(now=41.0) == 1.0


def test_empty_append_is_ignored_and_does_not_start_the_age_clock() -> None:
    buf = LiveBuffer()

    buf.append("trades", rows(0, range(0, 0)), now=10.0)

    assert buf.rows == 0
    assert buf.age(now=99.0) == 0.0
    assert buf.read("trades") == []
    assert buf.take().table("trades") is None


def test_drop_partitions_removes_only_those_partitions_rows_and_counts_them() -> None:
    buf = LiveBuffer()
    mixed = pa.concat_tables([rows(0, range(0, 2)), rows(1, range(0, 3)), rows(2, range(0, 1))])
    buf.append("trades", mixed, now=1.0)
    buf.append("trades", rows(1, range(3, 5)), now=2.0)
    buf.append("quotes", rows(1, range(0, 4)), now=3.0)

    dropped = buf.drop_partitions("trades", {1, 5})

    assert dropped == 5
    assert buf.rows == 3 + 4
    assert [offsets_of(c) for c in buf.read("trades")] == [[(0, 0), (0, 1), (2, 0)]]
    assert offsets_of(buf.read("quotes")[0]) == [(1, 0), (1, 1), (1, 2), (1, 3)]  # other tables untouched


def test_dropping_every_row_resets_the_age() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(4, range(0, 3)), now=1.0)

    assert buf.drop_partitions("trades", {4}) == 3

    assert buf.rows == 0
    assert buf.age(now=50.0) == 0.0


def test_drop_partitions_of_unknown_table_drops_nothing() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(0, range(0, 2)), now=1.0)

    assert buf.drop_partitions("quotes", {0}) == 0
    assert buf.rows == 2


def test_read_returns_a_copy_unaffected_by_later_take_and_append() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(0, range(0, 2)), now=1.0)

    snapshot = buf.read("trades")
    buf.release(buf.take().token)
    buf.append("trades", rows(0, range(2, 4)), now=2.0)

    assert [offsets_of(c) for c in snapshot] == [[(0, 0), (0, 1)]]
    assert [offsets_of(c) for c in buf.read("trades")] == [[(0, 2), (0, 3)]]


def test_read_is_unaffected_by_a_later_drop() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(3, range(0, 2)), now=1.0)

    snapshot = buf.read("trades")
    buf.drop_partitions("trades", {3})

    assert [offsets_of(c) for c in snapshot] == [[(3, 0), (3, 1)]]
    assert buf.read("trades") == []


def test_taken_rows_are_read_until_their_table_is_released() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(0, range(0, 2)), now=1.0)
    buf.append("quotes", rows(1, range(0, 1)), now=1.0)
    first = buf.take()
    buf.append("trades", rows(0, range(2, 3)), now=2.0)
    second = buf.take()
    buf.append("trades", rows(0, range(3, 4)), now=3.0)

    # In flight (oldest commit first), then waiting: every consumed row, in offset order.
    assert [o for c in buf.read("trades") for o in offsets_of(c)] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert buf.rows == 1  # only waiting rows count towards the next flush

    buf.release(first.token, "trades")  # trades of the first commit landed; quotes not yet
    assert [o for c in buf.read("trades") for o in offsets_of(c)] == [(0, 2), (0, 3)]
    assert offsets_of(buf.read("quotes")[0]) == [(1, 0)]
    buf.release(first.token, "quotes")
    buf.release(second.token)
    assert buf.read("quotes") == []
    assert [o for c in buf.read("trades") for o in offsets_of(c)] == [(0, 3)]
    buf.release(second.token)  # releasing twice is harmless


def test_held_bytes_include_rows_in_flight_until_released() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(0, range(0, 100)), now=1.0)
    held = buf.nbytes
    content = buf.take()
    assert buf.nbytes == held and content.nbytes == held
    buf.release(content.token)
    assert buf.nbytes == 0


def test_dropping_a_partition_also_drops_its_rows_in_flight() -> None:
    buf = LiveBuffer()
    buf.append("trades", rows(0, range(0, 2)), now=1.0)
    buf.append("trades", rows(1, range(0, 2)), now=1.0)
    buf.take()

    buf.drop_partitions("trades", {1})

    assert [o for c in buf.read("trades") for o in offsets_of(c)] == [(0, 0), (0, 1)]


def test_many_small_appends_are_merged_into_few_chunks_in_offset_order() -> None:
    buf = LiveBuffer()
    for i in range(1000):
        buf.append("trades", rows(0, range(i * 10, i * 10 + 10)), now=float(i))

    chunks = buf.read("trades")

    assert len(chunks) < 100  # 1,000 batches of 10 rows
    assert [o for c in chunks for o in offsets_of(c)] == [(0, o) for o in range(10_000)]
    assert buf.rows == 10_000
    assert buf.nbytes == sum(c.nbytes for c in chunks)
    content = buf.take()
    assert offsets_of(content.table("trades")) == [(0, o) for o in range(10_000)]
