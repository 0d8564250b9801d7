"""The Iceberg tables k2 owns, and how they are laid out.

Market tables (``trades``, ``quotes``, ``reference_data``) hold the wire fields plus two clocks
(``ts``: exchange event time; ``ingest_ts``: when k2 saw it, both UTC) and the Kafka lineage
(``kafka_partition``, ``kafka_offset``) that restart, hybrid reads and backfill rely on. They are
partitioned by ``day(ts)`` (UTC day; an exchange trading day is ``session``) and each commit is
sorted by ``(symbol, ts)`` so a symbol's ticks sit together in ~100k-row row groups.

``sequence_gaps`` is the ledger of missing sequence numbers. Its rows for one stream (table,
exchange, symbol, session) are rewritten as a unit whenever that stream's gaps change, keyed by
``stream_key``, so the table always holds the tracker's current view.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform

from k2.config import IcebergSettings
from k2.validation import TS_TYPE, output_schema
from k2.wire import Stream

__all__ = ["GAPS_SCHEMA", "GAPS_TABLE", "TABLE_FOR_STREAM", "ensure_tables", "market_arrow_schema"]

TABLE_FOR_STREAM: dict[Stream, str] = {"trades": "trades", "quotes": "quotes", "reference": "reference_data"}
GAPS_TABLE = "sequence_gaps"

GAPS_SCHEMA = pa.schema(
    [
        pa.field("stream_key", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("session", pa.int32(), nullable=False),
        pa.field("first_seq", pa.int64(), nullable=False),
        pa.field("last_seq", pa.int64(), nullable=False),
        pa.field("detected_at", TS_TYPE, nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("filled_at", TS_TYPE),
    ]
)


def market_arrow_schema(stream: Stream) -> pa.Schema:
    """Arrow schema of rows appended to a market table (non-null where the wire requires a value)."""
    return output_schema(stream)


def _common_properties(cfg: IcebergSettings) -> dict[str, str]:
    return {
        "format-version": "2",
        "write.parquet.row-group-limit": str(cfg.target_row_group_rows),
        "write.parquet.compression-codec": "zstd",
        # Keep metadata small as commits pile up (see lake/maintenance.py).
        "commit.manifest-merge.enabled": "true" if cfg.manifest_merge_min_count > 0 else "false",
        "commit.manifest.min-count-to-merge": str(cfg.manifest_merge_min_count),
        "write.metadata.delete-after-commit.enabled": "true",
        "write.metadata.previous-versions-max": "20",
    }


def _market_properties(cfg: IcebergSettings) -> dict[str, str]:
    # pyiceberg's automatic retry re-applies a failed append on top of the new head, which for a
    # stale writer means appending rows another writer already committed. k2 retries itself,
    # after checking offset continuity (lake/writer.py).
    return {**_common_properties(cfg), "commit.retry.num-retries": "0"}


def _to_iceberg(schema: pa.Schema) -> Schema:
    # Arrow nullability becomes Iceberg required/optional; ids are assigned 1..n in field order.
    return assign_fresh_schema_ids(Catalog._convert_schema_if_needed(schema))


def _create_market(
    catalog: Catalog, ident: tuple[str, str], *, stream: Stream, cfg: IcebergSettings
) -> Table:
    schema = _to_iceberg(market_arrow_schema(stream))
    ts_id = schema.find_field("ts").field_id
    sym_id = schema.find_field("symbol").field_id
    spec = PartitionSpec(
        PartitionField(source_id=ts_id, field_id=1000, transform=DayTransform(), name="ts_day")
    )
    order = SortOrder(SortField(source_id=sym_id, transform=IdentityTransform()), SortField(source_id=ts_id))
    return catalog.create_table(
        ident, schema=schema, partition_spec=spec, sort_order=order, properties=_market_properties(cfg)
    )


def ensure_tables(catalog: Catalog, cfg: IcebergSettings) -> dict[str, Table]:
    """Create the namespace and the four tables if missing; return them by table name."""
    _ensure_namespace(catalog, cfg.namespace)
    tables: dict[str, Table] = {}
    for stream, name in TABLE_FOR_STREAM.items():
        tables[name] = _load_or_create(
            catalog, (cfg.namespace, name), partial(_create_market, catalog, stream=stream, cfg=cfg)
        )
    tables[GAPS_TABLE] = _load_or_create(
        catalog,
        (cfg.namespace, GAPS_TABLE),
        lambda ident: catalog.create_table(
            ident, schema=_to_iceberg(GAPS_SCHEMA), properties=_common_properties(cfg)
        ),
    )
    return tables


def _ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create the namespace unless it exists. Several ingest processes may start on a fresh catalog
    at once; SqlCatalog reports the loser of that race as a raw database IntegrityError, not as
    NamespaceAlreadyExistsError, so any failure is forgiven once the namespace is there."""
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    except Exception:
        if not catalog.namespace_exists(namespace):
            raise


def _load_or_create(
    catalog: Catalog, ident: tuple[str, str], create: Callable[[tuple[str, str]], Table]
) -> Table:
    """Load the table, creating it if missing; a concurrent creator winning the race is fine."""
    try:
        return catalog.load_table(ident)
    except NoSuchTableError:
        pass
    try:
        return create(ident)
    except TableAlreadyExistsError:
        return catalog.load_table(ident)
    except Exception:  # a raw database error from the race's loser (see _ensure_namespace)
        if not catalog.table_exists(ident):
            raise
        return catalog.load_table(ident)
