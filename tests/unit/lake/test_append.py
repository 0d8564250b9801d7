"""append_rows: k2's copy-free append for day-partitioned tables, against a real SqlCatalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.config import IcebergSettings
from k2.ingest.committer import prepare_rows
from k2.lake import ensure_tables, open_catalog
from k2.lake.append import append_rows, day_numbers
from k2.lake.tables import market_arrow_schema

DAY_US = 86_400_000_000
T0 = 19_000 * DAY_US  # 2022-01-08 00:00 UTC


@pytest.fixture
def tables(tmp_path: Path) -> Iterator[dict[str, Table]]:
    cfg = IcebergSettings(warehouse=str(tmp_path / "wh"))
    catalog: Catalog = open_catalog(cfg)
    yield ensure_tables(catalog, cfg)
    catalog.engine.dispose()  # type: ignore[attr-defined]


def quotes(ts: list[int]) -> pa.Table:
    n = len(ts)
    return pa.Table.from_pydict(
        {
            "schema_version": [1] * n,
            "exchange": ["ASX"] * n,
            "symbol": [f"S{i % 3}" for i in range(n)],
            "session": [20220108] * n,
            "seq": list(range(1, n + 1)),
            "ts": ts,
            "bid": [1.0] * n,
            "ask": [1.5] * n,
            "bid_size": [10] * n,
            "ask_size": [20] * n,
            "ingest_ts": [T0] * n,
            "kafka_partition": [0] * n,
            "kafka_offset": list(range(n)),
        },
        schema=market_arrow_schema("quotes"),
    )


def test_day_numbers_floor_before_the_epoch() -> None:
    ts = pa.array([0, DAY_US - 1, DAY_US, -1], pa.timestamp("us", tz="UTC"))
    assert day_numbers(ts).tolist() == [0, 0, 1, -1]


@pytest.mark.parametrize("presorted", [True, False], ids=["grouped-by-day", "interleaved-days"])
def test_rows_land_once_each_in_the_partition_of_their_day(tables: dict[str, Table], presorted: bool) -> None:
    # Interleaved days, around midnight UTC: 3 partitions.
    ts = [T0 + (i % 3) * DAY_US - 5_000 + i for i in range(3_000)]
    rows = quotes(ts)
    if presorted:
        rows = prepare_rows("quotes", rows)
    table = tables["quotes"]
    append_rows(table, rows, {"k2.test": "yes"})

    table.refresh()
    snap = table.current_snapshot()
    assert snap is not None and snap.summary is not None
    assert snap.summary["k2.test"] == "yes"
    assert len(table.metadata.snapshots) == 1
    back = table.scan().to_arrow()
    assert sorted(back["kafka_offset"].to_pylist()) == list(range(3_000))
    files = list(table.scan().plan_files())
    assert len(files) == 3
    for task in files:
        (day,) = task.file.partition
        got = table.scan(row_filter=f"ts >= '{_iso(day)}' and ts < '{_iso(day + 1)}'").to_arrow()
        assert task.file.record_count == got.num_rows == 1_000
        assert pc.all(pc.equal(pa.array(day_numbers(got["ts"])), day)).as_py()


def test_an_empty_append_still_makes_a_snapshot_for_the_offsets(tables: dict[str, Table]) -> None:
    table = tables["quotes"]
    append_rows(table, quotes([]), {"k2.test": "empty"})
    table.refresh()
    snap = table.current_snapshot()
    assert snap is not None and snap.summary is not None and snap.summary["k2.test"] == "empty"
    assert table.scan().to_arrow().num_rows == 0


def _iso(day: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(day * 86_400, UTC).isoformat()
