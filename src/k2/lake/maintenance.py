"""Keep tables fast after days of small commits.

Each append adds a snapshot and a manifest; left alone, the metadata a commit must read and
rewrite grows with every commit (about 1 s per append at 500 snapshots, measured). Manifest
merging is on in the table properties (see tables.py), and this module expires old snapshots. It
never expires the newest snapshot that carries k2 offsets, so the resume position survives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyiceberg.table import Table

from k2.lake.offsets import read_offsets

__all__ = ["expire_snapshots"]


def expire_snapshots(table: Table, older_than_s: float, keep_min: int, now: datetime | None = None) -> int:
    """Expire snapshots older than ``older_than_s`` beyond the newest ``keep_min``; return how many."""
    table.refresh()
    snaps = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    if len(snaps) <= keep_min:
        return 0
    cutoff_ms = int(((now or datetime.now(UTC)) - timedelta(seconds=older_than_s)).timestamp() * 1000)
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    offsets_snapshot = read_offsets(table).snapshot_id
    if offsets_snapshot is not None:
        protected.add(offsets_snapshot)
    victims = [
        s.snapshot_id
        for s in snaps[: len(snaps) - keep_min]
        if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected
    ]
    if victims:
        table.maintenance.expire_snapshots().by_ids(victims).commit()
    return len(victims)
