"""Append an Arrow table to a day-partitioned Iceberg table without copying it per partition.

``Table.append`` in pyiceberg 0.12 splits its input by ``filter``-ing the whole table once per
partition value and then ``combine_chunks`` each part: two copies of every row. For a commit
of trades (a list column, unique ``trade_id`` strings) that was more than half of the commit:
0.25 s for 200k ASX rows spread over six UTC days, against 0.07 s to encode the same rows
to Parquet. Rows grouped by day need neither copy: each day is a zero-copy slice.

This module is that append, for tables partitioned by ``day(ts)`` and nothing else: the same
schema check, the same data-file writer (``write_file``: one Parquet file per bin of
``write.target-file-size-bytes``) and the same snapshot producer (merge- or fast-append by table
property) as ``Transaction.append``, with k2's snapshot properties. Any other partitioning goes
through ``Table.append`` unchanged.

Its module-level imports also load pyiceberg's whole write path when ingest starts, not on the
first commit, mid-stream (where the lazy imports stalled it by a few hundred ms).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import (
    _check_pyarrow_schema_compatible,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.transforms import DayTransform
from pyiceberg.utils.properties import property_as_bool, property_as_int

__all__ = ["append_rows", "day_numbers"]

_US_PER_DAY = 86_400_000_000


def day_numbers(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Iceberg's ``day(ts)`` of each value: whole days since 1970-01-01 UTC (floor for earlier)."""
    micros = pc.cast(ts, pa.int64()).to_numpy()
    return np.floor_divide(micros, _US_PER_DAY).astype(np.int32)


def append_rows(table: Table, rows: pa.Table, snapshot_properties: dict[str, str]) -> None:
    """Append ``rows`` in one snapshot carrying ``snapshot_properties``.

    Fastest when ``rows`` are already grouped by day of their partition source column (the
    committer sorts them so); otherwise they are reordered by day once, stably.
    """
    spec = table.metadata.spec()
    source = _day_source(table.metadata, spec)
    if source is None:
        table.append(rows, snapshot_properties=snapshot_properties)
        return
    with table.transaction() as tx:
        metadata = tx.table_metadata
        _check_pyarrow_schema_compatible(
            metadata.schema(), provided_schema=rows.schema, format_version=metadata.format_version
        )
        merge = property_as_bool(
            metadata.properties,
            TableProperties.MANIFEST_MERGE_ENABLED,
            TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT,
        )
        update = tx.update_snapshot(snapshot_properties=snapshot_properties)
        with update.merge_append() if merge else update.fast_append() as append_files:
            if rows.num_rows == 0:  # still a snapshot: it carries the offsets
                return
            target = property_as_int(
                metadata.properties,
                TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
            )
            assert target is not None
            task_schema = pyarrow_to_schema(
                rows.schema,
                name_mapping=metadata.schema().name_mapping,
                format_version=metadata.format_version,
            )
            tasks = (
                WriteTask(
                    write_uuid=append_files.commit_uuid,
                    task_id=task_id,
                    schema=task_schema,
                    record_batches=batches,
                    partition_key=PartitionKey(
                        field_values=[PartitionFieldValue(field=spec.fields[0], value=day)],
                        partition_spec=spec,
                        schema=metadata.schema(),
                    ),
                )
                for task_id, (day, batches) in enumerate(_by_day(rows, source, target))
            )
            for data_file in write_file(io=table.io, table_metadata=metadata, tasks=tasks):
                append_files.append_data_file(data_file)


def _day_source(metadata: TableMetadata, spec: PartitionSpec) -> str | None:
    """The column name partitioned by day, if that is the table's only partition field."""
    if len(spec.fields) != 1 or not isinstance(spec.fields[0].transform, DayTransform):
        return None
    return metadata.schema().find_column_name(spec.fields[0].source_id)


def _by_day(rows: pa.Table, source: str, target_file_size: int) -> Iterator[tuple[int, list[pa.RecordBatch]]]:
    """(day, record batches of one data file) for every file to write, days in ascending order."""
    days = day_numbers(rows[source])
    if len(days) > 1 and (np.diff(days) < 0).any():
        order = np.argsort(days, kind="stable")
        rows, days = rows.take(pa.array(order)), days[order]
    starts = np.flatnonzero(np.diff(days)) + 1
    bounds = [0, *starts.tolist(), len(days)]
    for lo, hi in itertools.pairwise(bounds):
        for batches in bin_pack_arrow_table(rows.slice(lo, hi - lo), target_file_size):
            yield int(days[lo]), batches
