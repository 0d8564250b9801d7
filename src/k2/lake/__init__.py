"""The lakehouse side of k2: Iceberg catalog, table definitions, the committing writer, upkeep."""

from k2.lake.catalog import open_catalog
from k2.lake.offsets import StoredOffsets, read_offsets
from k2.lake.tables import TABLE_FOR_STREAM, ensure_tables
from k2.lake.writer import CommitResult, TableWriter

__all__ = [
    "TABLE_FOR_STREAM",
    "CommitResult",
    "StoredOffsets",
    "TableWriter",
    "ensure_tables",
    "open_catalog",
    "read_offsets",
]
