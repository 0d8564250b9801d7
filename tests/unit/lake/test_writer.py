"""The lake side on a real SqlCatalog (SQLite in tmp_path): tables, offset commits, zombies, expiry.

The Kafka offsets stored in snapshot summaries are where ingest resumes, so each test asserts what
a restart would read back (``read_offsets``) as well as the rows the table holds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform

from k2.config import IcebergSettings
from k2.errors import CommitConflict, OffsetsMissing
from k2.lake import TableWriter, ensure_tables, open_catalog, read_offsets
from k2.lake.maintenance import expire_snapshots
from k2.lake.offsets import OFFSETS_KEY, WRITER_ID_KEY
from k2.lake.tables import market_arrow_schema
from k2.validation import ValidationRules, decode_batch

NOW_US = 1_700_000_000_000_000
RULES = ValidationRules(
    known_exchanges=frozenset({"ASX"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)
TOPIC = "trades"
LATER = datetime.now(UTC) + timedelta(days=1)  # every snapshot made by a test is "old" at this time


@pytest.fixture
def trades(catalog: Catalog, cfg: IcebergSettings) -> Table:
    return ensure_tables(catalog, cfg)["trades"]


def rows(partition: int, offsets: range) -> pa.Table:
    payloads = [
        msgspec.json.encode(
            dict(
                schema_version=1,
                exchange="ASX",
                symbol="BHP",
                session=20231114,
                seq=o + 1,
                ts=NOW_US - 1_000_000 + o,
                price=38.25,
                qty=100,
                trade_id=f"p{partition}-{o}",
            )
        )
        for o in offsets
    ]
    decoded = decode_batch("trades", payloads, [partition] * len(payloads), list(offsets), RULES, NOW_US)
    assert decoded.rejects == []
    return decoded.rows.cast(market_arrow_schema("trades"))


def row_count(table: Table) -> int:
    table.refresh()
    return table.scan().to_arrow().num_rows


def stored(table: Table) -> dict[int, int]:
    table.refresh()
    return read_offsets(table).for_topic(TOPIC)


def snapshot_ids(table: Table) -> list[int]:
    table.refresh()
    return [s.snapshot_id for s in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)]


# ---------------------------------------------------------------------------- tables


def test_ensure_tables_creates_the_four_tables_partitioned_by_day(
    catalog: Catalog, cfg: IcebergSettings
) -> None:
    tables = ensure_tables(catalog, cfg)

    assert set(tables) == {"trades", "quotes", "reference_data", "sequence_gaps"}
    assert {ident[-1] for ident in catalog.list_tables(cfg.namespace)} == set(tables)
    for name in ("trades", "quotes", "reference_data"):
        table = tables[name]
        (field,) = table.spec().fields
        assert isinstance(field.transform, DayTransform)
        assert table.schema().find_column_name(field.source_id) == "ts"
        # pyiceberg's own retry would rebase a zombie's append onto the new head.
        assert table.properties["commit.retry.num-retries"] == "0"
        assert table.schema().find_field("kafka_offset").required


def test_ensure_tables_is_idempotent_and_keeps_existing_data(
    catalog: Catalog, cfg: IcebergSettings, trades: Table
) -> None:
    TableWriter(trades, TOPIC, "w").commit(rows(0, range(3)), {0: 3}, {0: None})

    again = ensure_tables(catalog, cfg)
    reopened = ensure_tables(open_catalog(cfg), cfg)

    assert again["trades"].metadata.table_uuid == trades.metadata.table_uuid
    assert reopened["trades"].metadata.table_uuid == trades.metadata.table_uuid
    assert row_count(reopened["trades"]) == 3
    assert len(catalog.list_tables(cfg.namespace)) == 4


def test_empty_table_has_no_offsets_and_no_snapshot(trades: Table) -> None:
    found = read_offsets(trades)

    assert found.by_topic == {} and found.snapshot_id is None


# ---------------------------------------------------------------------------- commits and offsets


def test_commit_stores_offsets_in_the_snapshot_with_its_rows(trades: Table) -> None:
    writer = TableWriter(trades, TOPIC, "writer-a")

    result = writer.commit(rows(0, range(0, 3)), {0: 3}, {0: None})

    trades.refresh()
    snap = trades.current_snapshot()
    assert snap is not None and snap.summary is not None
    assert result.snapshot_id == snap.snapshot_id
    assert json.loads(snap.summary[OFFSETS_KEY] or "") == {TOPIC: {"0": 3}}
    assert snap.summary[WRITER_ID_KEY] == "writer-a"
    assert result.rows == 3 and result.attempts == 1
    found = read_offsets(trades)
    assert found.for_topic(TOPIC) == {0: 3} and found.snapshot_id == result.snapshot_id
    assert trades.scan(snapshot_id=result.snapshot_id).to_arrow()["kafka_offset"].to_pylist() == [0, 1, 2]
    assert writer.stored_offsets() == {0: 3}


def test_offsets_of_partitions_not_in_a_commit_are_carried_forward(trades: Table) -> None:
    writer = TableWriter(trades, TOPIC, "w")

    writer.commit(rows(0, range(0, 3)), {0: 3}, {0: None})
    writer.commit(rows(1, range(0, 10)), {1: 10}, {1: None})
    writer.commit(rows(0, range(3, 5)), {0: 5}, {0: 3})

    assert stored(trades) == {0: 5, 1: 10}
    assert row_count(trades) == 15


def test_commit_whose_expected_offset_differs_raises_conflict_and_appends_nothing(trades: Table) -> None:
    writer = TableWriter(trades, TOPIC, "w")
    writer.commit(rows(0, range(0, 3)), {0: 3}, {0: None})
    head = snapshot_ids(trades)[-1]

    with pytest.raises(CommitConflict) as err:
        writer.commit(rows(0, range(1, 4)), {0: 4}, {0: 1})

    assert (err.value.table, err.value.topic, err.value.partition) == ("trades", TOPIC, 0)
    assert (err.value.expected, err.value.found) == (1, 3)
    assert snapshot_ids(trades)[-1] == head
    assert row_count(trades) == 3
    assert stored(trades) == {0: 3}


def test_read_offsets_walks_back_past_an_append_made_outside_k2(trades: Table) -> None:
    result = TableWriter(trades, TOPIC, "w").commit(rows(0, range(0, 3)), {0: 3}, {0: None})

    trades.append(rows(0, range(100, 102)))  # e.g. a manual backfill without a summary

    trades.refresh()
    found = read_offsets(trades)
    assert found.for_topic(TOPIC) == {0: 3}
    assert found.snapshot_id == result.snapshot_id
    assert trades.current_snapshot().snapshot_id != result.snapshot_id  # type: ignore[union-attr]


def test_table_with_rows_but_no_k2_offsets_raises_offsets_missing(trades: Table) -> None:
    trades.append(rows(0, range(0, 2)))
    trades.refresh()
    head = trades.current_snapshot().snapshot_id  # type: ignore[union-attr]

    with pytest.raises(OffsetsMissing) as err:
        read_offsets(trades)

    assert (err.value.table, err.value.snapshot_id) == ("trades", head)
    # The writer refuses to guess too: nothing more is appended.
    with pytest.raises(OffsetsMissing):
        TableWriter(trades, TOPIC, "w").commit(rows(0, range(2, 4)), {0: 4}, {0: None})
    assert row_count(trades) == 2


def test_stale_writer_cannot_commit_a_partition_another_writer_moved(catalog: Catalog, trades: Table) -> None:
    ident = trades.name()
    writer_a = TableWriter(catalog.load_table(ident), TOPIC, "a")
    writer_b = TableWriter(catalog.load_table(ident), TOPIC, "b")  # loaded before A commits: stale view

    writer_a.commit(rows(0, range(0, 100)), {0: 100}, {0: None})
    with pytest.raises(CommitConflict) as err:
        writer_b.commit(rows(0, range(0, 100)), {0: 100}, {0: None})

    assert (err.value.partition, err.value.expected, err.value.found) == (0, None, 100)
    assert row_count(trades) == 100
    assert stored(trades) == {0: 100}
    assert read_offsets(trades).snapshot_id == snapshot_ids(trades)[-1]


def test_writer_of_another_partition_keeps_the_first_writers_offsets(catalog: Catalog, trades: Table) -> None:
    ident = trades.name()
    writer_a = TableWriter(catalog.load_table(ident), TOPIC, "a")
    writer_b = TableWriter(catalog.load_table(ident), TOPIC, "b")

    writer_a.commit(rows(0, range(0, 5)), {0: 5}, {0: None})
    writer_b.commit(rows(1, range(0, 7)), {1: 7}, {1: None})

    assert stored(trades) == {0: 5, 1: 7}
    assert row_count(trades) == 12


def test_offsets_of_other_topics_in_the_same_table_are_kept(trades: Table) -> None:
    TableWriter(trades, "trades-a", "w").commit(rows(0, range(0, 2)), {0: 2}, {0: None})
    TableWriter(trades, "trades-b", "w").commit(rows(0, range(0, 3)), {0: 3}, {0: None})

    trades.refresh()
    assert read_offsets(trades).by_topic == {"trades-a": {0: 2}, "trades-b": {0: 3}}


# ---------------------------------------------------------------------------- snapshot expiry


def test_expire_snapshots_keeps_the_newest_keep_min_and_the_resume_position(trades: Table) -> None:
    writer = TableWriter(trades, TOPIC, "w")
    for k in range(5):
        writer.commit(rows(0, range(2 * k, 2 * k + 2)), {0: 2 * k + 2}, {0: 2 * k or None})
    before = snapshot_ids(trades)

    expired = expire_snapshots(trades, older_than_s=0, keep_min=3, now=LATER)

    assert expired == 2
    assert snapshot_ids(trades) == before[-3:]
    assert stored(trades) == {0: 10}
    assert row_count(trades) == 10


def test_expire_snapshots_leaves_snapshots_younger_than_the_cutoff(trades: Table) -> None:
    writer = TableWriter(trades, TOPIC, "w")
    for k in range(4):
        writer.commit(rows(0, range(k, k + 1)), {0: k + 1}, {0: k or None})

    assert expire_snapshots(trades, older_than_s=3600, keep_min=1) == 0
    assert len(snapshot_ids(trades)) == 4


def test_expire_snapshots_never_expires_the_newest_snapshot_carrying_offsets(trades: Table) -> None:
    k2_snap = TableWriter(trades, TOPIC, "w").commit(rows(0, range(0, 3)), {0: 3}, {0: None}).snapshot_id
    for k in range(3):
        trades.append(rows(1, range(k, k + 1)))

    expire_snapshots(trades, older_than_s=0, keep_min=1, now=LATER)

    remaining = snapshot_ids(trades)
    assert k2_snap in remaining
    assert remaining[-1] == trades.current_snapshot().snapshot_id  # type: ignore[union-attr]


def test_resume_position_is_still_readable_after_expiring_snapshots_above_it(trades: Table) -> None:
    TableWriter(trades, TOPIC, "w").commit(rows(0, range(0, 3)), {0: 3}, {0: None})
    for k in range(3):
        trades.append(rows(1, range(k, k + 1)))

    expire_snapshots(trades, older_than_s=0, keep_min=1, now=LATER)

    assert stored(trades) == {0: 3}
