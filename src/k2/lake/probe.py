"""Find the rows that make a commit fail on data, so they can be set aside and the rest can land.

Decoding already refuses what Parquet or Iceberg could choke on (invalid UTF-8, for instance), so
this is the net below it: if a commit raises and the same rows cannot be written to an in-memory
Parquet file with Iceberg's statistics either, the rows are at fault, not the catalog. Halving
finds the culprits with O(k log n) trial writes for k bad rows among n; a failure no single row
explains (the rows are fine on their own) is not a data fault and is left to the caller.

The trial write follows pyiceberg's own ``ParquetFormatWriter``: Arrow's full validation, a
Parquet encode, then ``data_file_statistics_from_parquet_metadata`` (where invalid UTF-8 in a
string column's min/max used to fail a commit).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.table import Table

__all__ = ["unwritable_rows"]


def unwritable_rows(table: Table, rows: pa.Table) -> np.ndarray | None:
    """Positions in ``rows`` of the rows that cannot be written to ``table``; None if all can.

    None also when the rows only fail together: then the fault is not in any row.
    """
    if _writable(table, rows):
        return None
    bad: list[int] = []
    _halve(table, rows, 0, rows.num_rows, bad)
    return np.asarray(bad, dtype=np.int64) if bad else None


def _halve(table: Table, rows: pa.Table, lo: int, hi: int, bad: list[int]) -> None:
    if hi - lo == 1:
        bad.append(lo)
        return
    mid = (lo + hi) // 2
    for a, b in ((lo, mid), (mid, hi)):
        if not _writable(table, rows.slice(a, b - a)):
            _halve(table, rows, a, b, bad)


def _writable(table: Table, rows: pa.Table) -> bool:
    schema = table.schema()
    try:
        rows.validate(full=True)
        sink = pa.BufferOutputStream()
        writer = pq.ParquetWriter(sink, rows.schema)
        writer.write_table(rows)
        writer.close()
        data_file_statistics_from_parquet_metadata(
            parquet_metadata=writer.writer.metadata,
            stats_columns=compute_statistics_plan(schema, table.properties),
            parquet_column_mapping=parquet_path_to_id_mapping(schema),
        )
    except Exception:  # any failure is the verdict being asked for, not an error here
        return False
    return True
