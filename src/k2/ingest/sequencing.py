"""Apply the sequence tracker and dedup to a decoded batch, one stream group at a time.

Rows are grouped by (kafka_partition, exchange, symbol) with a *stable* sort and cut into runs of
one session, so seqs and sessions reach the tracker in arrival order whatever the batch split.
Each partition has its own tracker and dedup (``PartitionSequencing``), because a partition's
state must move with its assignment.

The landing rule, per message: dedup decides whether the identity is new; the tracker decides
whether it can be placed. A new identity the tracker places lands. A repeated identity is a
duplicate: dropped and counted. A new identity the tracker cannot place (a session older than it
retains, or a seq whose gap was already declared lost) goes to the DLQ: it is not lost, and it
never contradicts the ``sequence_gaps`` ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.dedup import Dedup
from k2.sequence_tracker import SequenceTracker

__all__ = ["PartitionSequencing", "SequencingOutcome", "apply_sequencing"]

_GROUP_KEYS = ["kafka_partition", "exchange", "symbol", "session"]


@dataclass(slots=True)
class PartitionSequencing:
    tracker: SequenceTracker
    dedup: Dedup


@dataclass(slots=True)
class SequencingOutcome:
    rows: pa.Table  # rows that land
    unplaceable: pa.Table  # new identities the tracker refused: to the DLQ
    duplicates: int = 0


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """Integer code per row (dictionary order) and the number of distinct values."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def _stream_order(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """A stable order grouping rows by (partition, exchange, symbol), and each row's session.

    Sorting one int64 key built from dictionary codes is far cheaper than a multi-column sort on
    strings, and a stable sort keeps arrival order within each stream.
    """
    exchange, n_exchange = _codes(rows["exchange"])
    symbol, n_symbol = _codes(rows["symbol"])
    partition = rows["kafka_partition"].to_numpy().astype(np.int64)
    key = (partition * n_exchange + exchange) * n_symbol + symbol
    order = np.argsort(key, kind="stable")
    sessions = rows["session"].to_numpy()[order]
    key = key[order]
    change = np.empty(len(order), dtype=bool)
    change[0] = True
    change[1:] = (key[1:] != key[:-1]) | (sessions[1:] != sessions[:-1])
    return order, np.flatnonzero(change)


def apply_sequencing(
    rows: pa.Table, states: dict[int, PartitionSequencing], now_us: int
) -> SequencingOutcome:
    n = rows.num_rows
    if n == 0:
        return SequencingOutcome(rows, rows)
    order, starts = _stream_order(rows)
    seqs = rows["seq"].to_numpy()[order]
    ends = np.append(starts[1:], n)
    heads = rows.select(_GROUP_KEYS).take(pa.array(order[starts])).to_pylist()
    land = np.empty(n, dtype=bool)  # in stream order
    dlq = np.zeros(n, dtype=bool)
    duplicates = 0
    for head, lo, hi in zip(heads, starts, ends, strict=True):
        state = states[head["kafka_partition"]]
        group = seqs[lo:hi]
        exchange, symbol, session = head["exchange"], head["symbol"], head["session"]
        new = state.dedup.admit(exchange, symbol, session, group, now_us)
        placed = state.tracker.observe(exchange, symbol, session, group, now_us).keep
        land[lo:hi] = new & placed
        if not placed.all():
            dlq[lo:hi] = new & ~placed
        duplicates += int(hi - lo - np.count_nonzero(new))
    if land.all():
        return SequencingOutcome(rows, rows.slice(0, 0), duplicates)
    # Back to arrival order: rows keep the order they were consumed in.
    land_in_place = np.empty(n, dtype=bool)
    land_in_place[order] = land
    dlq_in_place = np.zeros(n, dtype=bool)
    dlq_in_place[order] = dlq
    unplaceable = rows.filter(pa.array(dlq_in_place)) if dlq.any() else rows.slice(0, 0)
    return SequencingOutcome(rows.filter(pa.array(land_in_place)), unplaceable, duplicates)
