"""Keep tables fast after days of small commits.

Each append adds a snapshot; pyiceberg copies the whole table metadata (every snapshot with its
summary) many times per commit, so append latency grows with the number of snapshots kept (about
1 s per append at 500 snapshots, measured). Manifest merging is on in the table properties (see
tables.py), and this module expires old snapshots in a single metadata pass.

The resume position must survive: the newest snapshot carrying k2 offsets, and every snapshot
from the head back to it (``read_offsets`` walks that chain), are never expired.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyiceberg.table import Table

from k2.lake.offsets import read_offsets

__all__ = ["expire_snapshots"]


def _chain_to_offsets(table: Table) -> list[int]:
    """Snapshot ids from the head back to (and including) the newest one carrying k2 offsets."""
    target = read_offsets(table).snapshot_id
    chain: list[int] = []
    snap = table.current_snapshot()
    while snap is not None and target is not None:
        chain.append(snap.snapshot_id)
        if snap.snapshot_id == target or snap.parent_snapshot_id is None:
            break
        snap = table.snapshot_by_id(snap.parent_snapshot_id)
    return chain


def expire_snapshots(table: Table, older_than_s: float, keep_min: int, now: datetime | None = None) -> int:
    """Expire snapshots older than ``older_than_s``, keeping the newest ``keep_min`` and the chain
    to the resume position; return how many were expired."""
    table.refresh()
    snaps = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    if len(snaps) <= keep_min:
        return 0
    keep = {s.snapshot_id for s in snaps[len(snaps) - keep_min :]}
    keep.update(_chain_to_offsets(table))
    keep.update(ref.snapshot_id for ref in table.metadata.refs.values())
    cutoff_ms = int(((now or datetime.now(UTC)) - timedelta(seconds=older_than_s)).timestamp() * 1000)
    # older_than() works in one pass over the metadata (by_id() copies it per snapshot), so cut
    # just below the oldest snapshot that must stay.
    oldest_kept_ms = min(s.timestamp_ms for s in snaps if s.snapshot_id in keep)
    limit_ms = min(cutoff_ms, oldest_kept_ms)
    victims = [s for s in snaps if s.timestamp_ms < limit_ms]
    if not victims:
        return 0
    table.maintenance.expire_snapshots().older_than(datetime.fromtimestamp(limit_ms / 1000, UTC)).commit()
    return len(victims)
