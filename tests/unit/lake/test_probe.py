"""A commit that fails on data: the probe names the rows, the committer sets them aside and the
rest lands with the offsets, on a real SqlCatalog. Rows with invalid UTF-8 stand in for any row
Parquet or Iceberg cannot take (decoding refuses them now, so they are built past it here)."""

from __future__ import annotations

from collections.abc import Collection

import msgspec
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.config import IcebergSettings, IngestSettings
from k2.ingest.committer import Committer, FlushWork, StreamWork
from k2.lake import TableWriter, ensure_tables, read_offsets
from k2.lake.probe import unwritable_rows
from k2.lake.tables import GAPS_TABLE, market_arrow_schema
from k2.live_buffer import LiveBuffer
from k2.validation import ValidationRules, decode_batch

NOW_US = 1_700_000_000_000_000
RULES = ValidationRules(
    known_exchanges=frozenset({"ASX"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)


@pytest.fixture
def tables(catalog: Catalog, cfg: IcebergSettings) -> dict[str, Table]:
    return ensure_tables(catalog, cfg)


def _rows(n: int, corrupt: Collection[int] = ()) -> pa.Table:
    """``n`` decoded trades of partition 0, offsets 0..n-1; rows in ``corrupt`` get an invalid
    UTF-8 ``trade_id`` (written into the string buffer, as Arrow's JSON reader once did)."""
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
                trade_id=f"id{o:04d}",
            )
        )
        for o in range(n)
    ]
    rows = decode_batch("trades", payloads, [0] * n, list(range(n)), RULES, NOW_US).rows
    ids = [b"\xff\xfe\xfd\xfc\xfb\xfa" if i in corrupt else f"id{i:04d}".encode() for i in range(n)]
    broken = pa.array(ids, pa.binary()).view(pa.string())
    return rows.set_column(rows.column_names.index("trade_id"), "trade_id", broken)


def test_rows_with_invalid_utf8_really_fail_an_iceberg_commit(tables: dict[str, Table]) -> None:
    writer = TableWriter(tables["trades"], "trades", "w1")
    with pytest.raises(Exception):  # noqa: B017 - pyiceberg's own error, whatever it is in this version
        writer.commit(_rows(4, {2}).cast(market_arrow_schema("trades")), {0: 4}, {0: None})


def test_probe_names_exactly_the_unwritable_rows(tables: dict[str, Table]) -> None:
    rows = _rows(1000, {0, 517, 999}).cast(market_arrow_schema("trades"))
    bad = unwritable_rows(tables["trades"], rows)
    assert bad is not None
    assert sorted(bad.tolist()) == [0, 517, 999]


def test_probe_finds_nothing_in_good_rows(tables: dict[str, Table]) -> None:
    assert unwritable_rows(tables["trades"], _rows(100).cast(market_arrow_schema("trades"))) is None


class _FakeDlq:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self, timeout: float = 30.0) -> None:
        self.flushes += 1


def test_committer_sets_bad_rows_aside_and_lands_the_rest_with_the_offsets(
    tables: dict[str, Table],
) -> None:
    buffer = LiveBuffer()
    buffer.append("trades", _rows(50, {7, 31}), 0.0)
    set_aside: list[tuple[str, list[int], str]] = []
    dlq = _FakeDlq()

    def collect() -> FlushWork:
        work = StreamWork("trades", "trades", offsets={0: 50}, expected={0: None})
        return FlushWork(buffer.take(), [work])

    committer = Committer(
        buffer,
        {"trades": TableWriter(tables["trades"], "trades", "w1")},
        tables[GAPS_TABLE],
        dlq,  # type: ignore[arg-type]
        collect,
        lambda _s: None,
        IngestSettings(),
        IcebergSettings(),
        lambda topic, rows, e: set_aside.append((topic, rows["kafka_offset"].to_pylist(), type(e).__name__)),
    )
    committer.flush_now()

    assert [(t, sorted(offs)) for t, offs, _ in set_aside] == [("trades", [7, 31])]
    assert dlq.flushes >= 2, "the DLQ is flushed after the set-aside letters, before the commit"
    table = tables["trades"]
    table.refresh()
    landed = table.scan().to_arrow()
    assert sorted(landed["kafka_offset"].to_pylist()) == [o for o in range(50) if o not in (7, 31)]
    assert read_offsets(table).for_topic("trades") == {0: 50}
    assert committer.rows_set_aside == 2
    landed.validate(full=True)
