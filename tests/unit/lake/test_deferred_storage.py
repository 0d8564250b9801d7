"""The deferred ledger in snapshot summaries: written with the rows and offsets, carried forward by
every later commit (also one that does not know it), replaced only for the committing partitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.config import IcebergSettings
from k2.deferred_ledger import DeferredLedger
from k2.lake import TableWriter, ensure_tables, open_catalog, read_offsets
from k2.lake.tables import market_arrow_schema


@pytest.fixture
def trades(tmp_path: Path) -> Iterator[Table]:
    cfg = IcebergSettings(warehouse=str(tmp_path / "wh"))
    catalog: Catalog = open_catalog(cfg)
    yield ensure_tables(catalog, cfg)["trades"]
    catalog.engine.dispose()  # type: ignore[attr-defined]


def _ledger(*ranges: tuple[int, int, int, str]) -> DeferredLedger:
    ledger = DeferredLedger()
    for p, first, last, cls in ranges:
        ledger.add("trades", p, first, last, [cls], count=last - first + 1, since=1_700_000_000.0)
    return ledger


def test_ledger_lands_with_the_offsets_and_survives_commits_that_do_not_carry_it(trades: Table) -> None:
    empty = market_arrow_schema("trades").empty_table()
    a = TableWriter(trades, "trades", "a")
    a.commit(empty, {0: 100}, {0: None}, _ledger((0, 10, 59, "tier3")))
    # another writer, owning only partition 1, knows nothing of the ledger
    TableWriter(trades, "trades", "b").commit(empty, {1: 7}, {1: None})
    stored = read_offsets(trades)
    assert stored.by_topic == {"trades": {0: 100, 1: 7}}
    assert [(r.first, r.last, set(r.classes)) for r in stored.deferred.ranges("trades", 0)] == [
        (10, 59, {"tier3"})
    ]


def test_a_backfilled_partition_clears_its_ranges_and_keeps_the_others(trades: Table) -> None:
    empty = market_arrow_schema("trades").empty_table()
    w = TableWriter(trades, "trades", "a")
    w.commit(empty, {0: 100, 1: 50}, {0: None, 1: None}, _ledger((0, 10, 59, "tier3"), (1, 0, 9, "low")))
    mine = read_offsets(trades).deferred
    mine.remove("trades", 0, 10, 59, landed=50)
    w.commit(empty, {}, {0: 100}, mine.restrict([("trades", 0)]))
    stored = read_offsets(trades).deferred
    assert stored.ranges("trades", 0) == []
    assert [(r.first, r.last) for r in stored.ranges("trades", 1)] == [(0, 9)]
