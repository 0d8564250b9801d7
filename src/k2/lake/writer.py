"""Append rows and the Kafka offsets they cover to an Iceberg table, in one snapshot.

This is the exactly-once point. Before every commit the writer re-reads the table's stored
offsets and checks continuity: for each partition in the commit, the stored next-offset must be
exactly where this writer's buffer began. If another writer moved it (a rebalance gave the
partition away and the new owner committed first), this writer is a zombie and ``CommitConflict``
is raised instead of appending rows that already landed. Commit races detected by the catalog
(``CommitFailedException``) are retried here, re-checking continuity each time, never by
pyiceberg's own retry (disabled on these tables; it would rebase a stale append).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from k2.deferred_ledger import LEDGER_KEY, DeferredLedger
from k2.errors import CommitConflict
from k2.lake.append import append_rows
from k2.lake.offsets import COMMIT_ID_KEY, OFFSETS_KEY, WRITER_ID_KEY, encode_offsets, read_offsets

__all__ = ["CommitResult", "TableWriter"]


@dataclass(frozen=True, slots=True)
class CommitResult:
    table: str
    snapshot_id: int | None
    rows: int
    commit_id: str
    seconds: float
    attempts: int


class TableWriter:
    """The single writer of one market table for one topic."""

    def __init__(self, table: Table, topic: str, writer_id: str, retry_for_s: float = 60.0) -> None:
        self._table = table
        self._topic = topic
        self._writer_id = writer_id
        self._retry_for_s = retry_for_s

    @property
    def table(self) -> Table:
        return self._table

    @property
    def name(self) -> str:
        return self._table.name()[-1]

    def stored_offsets(self) -> dict[int, int]:
        """Next offset per partition as stored in the newest k2 snapshot (refreshes the table)."""
        self._table.refresh()
        return read_offsets(self._table).for_topic(self._topic)

    def commit(
        self,
        rows: pa.Table,
        offsets: dict[int, int],
        expected: dict[int, int | None],
        deferred: DeferredLedger | None = None,
    ) -> CommitResult:
        """Append ``rows`` with ``offsets`` (next offset per partition covered by this commit).

        ``expected[p]`` is the stored offset this writer's buffer for ``p`` started from (None if
        the table had none for ``p``). Raises CommitConflict if any differs from what is stored.
        ``deferred``: this writer's ledger for the partitions in ``expected`` (their pending shed
        ranges replace the stored ones; other partitions' ranges are carried forward as stored).
        """
        commit_id = uuid.uuid4().hex
        started = time.perf_counter()
        # Concurrent writers of one table (several ingest processes) race in the catalog; the
        # loser re-reads, re-checks continuity and tries again, with jittered backoff so that
        # N writers committing on the same cadence do not collide again in lockstep.
        retrying = Retrying(
            retry=retry_if_exception_type(CommitFailedException),
            stop=stop_after_delay(self._retry_for_s),
            wait=wait_random_exponential(multiplier=0.02, max=1.0),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._append(rows, offsets, expected, deferred, commit_id)
        snap = self._table.current_snapshot()
        return CommitResult(
            self.name,
            snap.snapshot_id if snap else None,
            rows.num_rows,
            commit_id,
            time.perf_counter() - started,
            attempt.retry_state.attempt_number,
        )

    def _append(
        self,
        rows: pa.Table,
        offsets: dict[int, int],
        expected: dict[int, int | None],
        deferred: DeferredLedger | None,
        commit_id: str,
    ) -> None:
        """One attempt: re-read what is stored, check continuity, append with the merged state."""
        self._table.refresh()
        stored = read_offsets(self._table)
        current = stored.for_topic(self._topic)
        for p, exp in expected.items():
            if current.get(p) != exp:
                raise CommitConflict(self.name, self._topic, p, exp, current.get(p))
        merged = dict(stored.by_topic)
        merged[self._topic] = {**current, **offsets}
        props = {
            OFFSETS_KEY: encode_offsets(merged),
            COMMIT_ID_KEY: commit_id,
            WRITER_ID_KEY: self._writer_id,
        }
        ledger = stored.deferred
        if deferred is not None:
            ledger = ledger.overlay(deferred, [(self._topic, p) for p in expected])
        if ledger.partitions():
            props[LEDGER_KEY] = ledger.encode()
        append_rows(self._table, rows, props)
