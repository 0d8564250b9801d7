"""The hybrid read rule: which live rows join a pinned Iceberg snapshot, exactly (pure).

A query pins one snapshot S of a table. S stores, per Kafka partition p, ``S[p]``: the next offset
after everything S holds (``k2.offsets``; a partition S does not name has nothing stored, S[p] = 0).
The live part is then exactly the buffered rows with ``offset >= S[p]``: rows below are in S, rows
at or above are not (every commit appends a partition's rows in offset order, up to its stored
offset). No time window, no guess.

Completeness needs each buffer to still hold every row from S[p] on. An ingest process keeps a row
readable until the commit holding it is visible (``LiveBuffer.release``) and reports, per owned
partition, ``floor`` (every offset below is visible in Iceberg) and ``consumed`` (next offset after
its last buffered row). The engine reads the buffers *first* and pins S *after*: a row missing from
a buffer was committed before the read, so S (pinned later) holds it, i.e. ``floor <= S[p]``. If a
report says otherwise (a snapshot older than the buffers, e.g. a lagging catalog replica), this
rule names the partition and the missing range instead of answering short; the engine re-pins.

While a partition moves between processes (rebalance, crash and restart), two buffers may hold the
same offsets: the old owner until it drops them, the new one after re-reading from S[p]. The same
(partition, offset) is the same Kafka message, so each offset is taken once: pieces are taken
newest first (highest ``consumed``), and a later piece contributes only offsets no earlier piece
covered. Proof sketch and the rebalance cases: ``docs/hybrid-read.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from k2.live_protocol import PartitionLive

__all__ = ["LiveSide", "Merged", "merge_live"]


@dataclass(frozen=True, slots=True)
class LiveSide:
    """One ingest process's answer for one table: its rows and the ranges it vouches for."""

    rows: pa.Table  # has kafka_partition (int32) and kafka_offset (int64)
    ranges: Mapping[int, PartitionLive]  # what it holds per partition (shed messages excepted)


@dataclass(slots=True)
class Merged:
    rows: list[pa.Table]  # the live rows to union with S, at most one row per (partition, offset)
    live_from: dict[int, int] = field(default_factory=dict)  # partition -> S[p], for reported ones
    # Partition -> (first, end) of offsets that neither S nor any buffer holds: S is too old.
    unreadable: dict[int, tuple[int, int]] = field(default_factory=dict)


def merge_live(stored: Mapping[int, int], sides: Sequence[LiveSide]) -> Merged:
    """Apply the read rule to the buffers' answers for one table pinned at offsets ``stored``."""
    out = Merged(rows=[])
    covered: dict[int, list[tuple[int, int]]] = {}  # partition -> [lo, hi) already taken
    for side in sorted(sides, key=lambda s: -max((r.consumed for r in s.ranges.values()), default=0)):
        keep = _keep_mask(side, stored, covered, out)
        if keep is None:
            continue
        rows = side.rows if bool(keep.all()) else side.rows.filter(pa.array(keep))
        if rows.num_rows:
            out.rows.append(rows)
    return out


def _keep_mask(
    side: LiveSide,
    stored: Mapping[int, int],
    covered: dict[int, list[tuple[int, int]]],
    out: Merged,
) -> np.ndarray | None:
    """Rows of ``side`` at or past S[p] in an offset range no newer side already gave."""
    n = side.rows.num_rows
    parts = side.rows["kafka_partition"].to_numpy() if n else np.empty(0, np.int32)
    offs = side.rows["kafka_offset"].to_numpy() if n else np.empty(0, np.int64)
    keep = np.zeros(n, dtype=bool)
    for p, r in side.ranges.items():
        start = stored.get(p, 0)
        lo = max(start, r.floor)
        if r.floor > start:  # rows [start, floor) are in neither place
            prev = out.unreadable.get(p)
            out.unreadable[p] = (start, max(r.floor, prev[1] if prev else r.floor))
        out.live_from[p] = start
        if lo >= r.consumed:
            continue
        mine = parts == p
        if not mine.any():
            covered.setdefault(p, []).append((lo, r.consumed))
            continue
        take = mine & (offs >= lo)
        for c_lo, c_hi in covered.get(p, []):
            take &= ~((offs >= c_lo) & (offs < c_hi))
        keep |= take
        covered.setdefault(p, []).append((lo, r.consumed))
    # A covered range from a newer side fills what an older side says is unreadable.
    for p, (first, end) in list(out.unreadable.items()):
        if any(c_lo <= first and c_hi >= end for c_lo, c_hi in covered.get(p, [])):
            del out.unreadable[p]
    return keep if n else None
