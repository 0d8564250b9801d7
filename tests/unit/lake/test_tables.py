"""Catalog and table creation when several ingest processes start on one fresh catalog at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from k2.config import IcebergSettings
from k2.lake import ensure_tables, open_catalog


def _ensure(warehouse: str, start: multiprocessing.synchronize.Barrier) -> list[str]:
    cfg = IcebergSettings(warehouse=warehouse)
    start.wait()  # everyone opens and creates at once: the race of `k2 ingest` processes at first start
    return sorted(ensure_tables(open_catalog(cfg), cfg))


def test_concurrent_first_start_creates_each_table_once(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "wh")
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Manager().Barrier(n)
    with ctx.Pool(n) as pool:
        results = pool.starmap(_ensure, [(warehouse, barrier)] * n)
    assert results == [["quotes", "reference_data", "sequence_gaps", "trades"]] * n
    cfg = IcebergSettings(warehouse=warehouse)
    catalog = open_catalog(cfg)
    assert sorted(t[-1] for t in catalog.list_tables(cfg.namespace)) == results[0]
