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

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.dedup import Dedup
from k2.sequence_tracker import SequenceTracker

__all__ = ["PartitionSequencing", "SequencingOutcome", "apply_sequencing"]

# Rows are ordered by stream (stable, so arrival order is kept within it) and cut into runs of one
# session: sessions reach the tracker in arrival order whatever the batch boundaries.
_ORDER_KEYS = ["kafka_partition", "exchange", "symbol"]
_GROUP_KEYS = [*_ORDER_KEYS, "session"]


@dataclass(slots=True)
class PartitionSequencing:
    tracker: SequenceTracker
    dedup: Dedup


@dataclass(slots=True)
class SequencingOutcome:
    rows: pa.Table  # rows that land
    unplaceable: pa.Table  # new identities the tracker refused: to the DLQ
    duplicates: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _group_starts(t: pa.Table) -> np.ndarray:
    """Row indices where a new run of one (partition, exchange, symbol, session) starts in ``t``."""
    n = t.num_rows
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for name in _GROUP_KEYS:
        col = t[name]
        if n > 1:
            diff = pc.not_equal(col.slice(1), col.slice(0, n - 1))
            change[1:] |= np.asarray(diff.to_numpy(zero_copy_only=False), dtype=bool)
    return np.flatnonzero(change)


def apply_sequencing(
    rows: pa.Table, states: dict[int, PartitionSequencing], now_us: int
) -> SequencingOutcome:
    if rows.num_rows == 0:
        return SequencingOutcome(rows, rows)
    order = pc.sort_indices(rows, sort_keys=[(k, "ascending") for k in _ORDER_KEYS])
    t = rows.take(order)
    seqs = t["seq"].to_numpy()
    starts = _group_starts(t)
    ends = np.append(starts[1:], t.num_rows)
    heads = t.select(_GROUP_KEYS).take(pa.array(starts)).to_pylist()
    land = np.empty(t.num_rows, dtype=bool)
    dlq = np.zeros(t.num_rows, dtype=bool)
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
    out = t if land.all() else t.filter(pa.array(land))
    unplaceable = t.filter(pa.array(dlq)) if dlq.any() else t.slice(0, 0)
    return SequencingOutcome(out, unplaceable, duplicates)
