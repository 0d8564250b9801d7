"""The live buffer: validated rows that are consumed but not yet committed to Iceberg.

It plays two parts. For the committer it is the queue of rows to write (``take`` swaps the whole
content out atomically with the Kafka offsets it covers, so rows and offsets always match). For
the hybrid read (live buffer ∪ Iceberg snapshot) it is the fresh tail of every table: rows keep
``kafka_partition`` and ``kafka_offset``, so a reader can drop any buffered row that an Iceberg
snapshot already holds, and a backfill can say exactly which offsets it covers.

Rows are kept as whole Arrow chunks per table (one per consumed batch): no per-row work.
Thread-safe: the consumer appends, the committer takes, readers copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["BufferContent", "LiveBuffer"]


@dataclass(slots=True)
class BufferContent:
    """What the committer takes: the buffered chunks per table and their row count."""

    chunks: dict[str, list[pa.Table]] = field(default_factory=dict)
    rows: int = 0
    nbytes: int = 0

    def table(self, name: str) -> pa.Table | None:
        parts = self.chunks.get(name)
        if not parts:
            return None
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


class LiveBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._content = BufferContent()
        self._oldest: float | None = None

    def append(self, table_name: str, rows: pa.Table, now: float) -> None:
        if rows.num_rows == 0:
            return
        with self._lock:
            self._content.chunks.setdefault(table_name, []).append(rows)
            self._content.rows += rows.num_rows
            self._content.nbytes += rows.nbytes
            if self._oldest is None:
                self._oldest = now

    @property
    def rows(self) -> int:
        return self._content.rows

    @property
    def nbytes(self) -> int:
        """Bytes of Arrow data buffered (what a commit would give back)."""
        return self._content.nbytes

    def age(self, now: float) -> float:
        oldest = self._oldest
        return 0.0 if oldest is None else now - oldest

    def take(self) -> BufferContent:
        """Swap everything out. The caller holds the lock under which rows are appended together with
        their offsets, so what it reads as "consumed up to" matches exactly what it took."""
        with self._lock:
            content, self._content, self._oldest = self._content, BufferContent(), None
        return content

    def drop_partitions(self, table_name: str, partitions: set[int]) -> int:
        """Forget rows of partitions this process no longer owns; returns how many were dropped."""
        with self._lock:
            kept: list[pa.Table] = []
            dropped = 0
            mask_values = pa.array(sorted(partitions), pa.int32())
            for chunk in self._content.chunks.get(table_name, []):
                keep = pc.invert(pc.is_in(chunk["kafka_partition"], mask_values))
                remaining = chunk.filter(keep)
                dropped += chunk.num_rows - remaining.num_rows
                self._content.nbytes -= chunk.nbytes - remaining.nbytes
                if remaining.num_rows:
                    kept.append(remaining)
            self._content.chunks[table_name] = kept
            self._content.rows -= dropped
            if self._content.rows == 0:
                self._oldest = None
            return dropped

    def read(self, table_name: str) -> list[pa.Table]:
        """A consistent copy of the buffered chunks of one table, for fresh reads."""
        with self._lock:
            return list(self._content.chunks.get(table_name, []))
