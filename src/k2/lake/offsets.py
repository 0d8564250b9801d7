"""Kafka offsets stored in Iceberg snapshot summaries: the source of truth for where ingest resumes.

Every k2 append writes, in the same snapshot as its rows, the next offset to read for *every*
partition of the topic known so far (its own partitions merged with what the previous snapshot
held). So the newest k2 snapshot alone answers "where do I resume", and snapshot expiry can drop
older ones freely. Kafka's own group offsets are only advisory (they feed lag metrics).

Summary keys: ``k2.offsets`` (JSON ``{topic: {partition: next_offset}}``), ``k2.deferred`` (the
deferred ledger: offset ranges holding shed messages not yet backfilled, see
``k2.deferred_ledger``; absent when nothing is pending), ``k2.commit-id``, ``k2.writer-id``. The
ledger is read from the same snapshot as the offsets and carried forward by every commit, so
the two always describe the same moment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyiceberg.table import Table

from k2.deferred_ledger import LEDGER_KEY, DeferredLedger
from k2.errors import OffsetsMissing

__all__ = ["OFFSETS_KEY", "StoredOffsets", "encode_offsets", "read_offsets"]

OFFSETS_KEY = "k2.offsets"
COMMIT_ID_KEY = "k2.commit-id"
WRITER_ID_KEY = "k2.writer-id"


@dataclass(frozen=True, slots=True)
class StoredOffsets:
    """Offsets found in a table: ``by_topic[topic][partition] = next offset to consume``."""

    by_topic: dict[str, dict[int, int]] = field(default_factory=dict)
    snapshot_id: int | None = None
    deferred: DeferredLedger = field(default_factory=DeferredLedger)

    def for_topic(self, topic: str) -> dict[int, int]:
        return dict(self.by_topic.get(topic, {}))


def encode_offsets(by_topic: dict[str, dict[int, int]]) -> str:
    return json.dumps({t: {str(p): o for p, o in sorted(ps.items())} for t, ps in sorted(by_topic.items())})


def _decode(raw: str) -> dict[str, dict[int, int]]:
    data = json.loads(raw)
    return {t: {int(p): int(o) for p, o in ps.items()} for t, ps in data.items()}


def read_offsets(table: Table, snapshot_id: int | None = None) -> StoredOffsets:
    """Walk back from the current snapshot (or ``snapshot_id``) to the newest one carrying k2 offsets.

    Raises ``OffsetsMissing`` when the table has rows but no such snapshot is reachable: resuming
    from Kafka's group offsets or from the beginning would silently lose or duplicate rows.
    """
    current = table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    snap = current
    while snap is not None:
        raw = snap.summary[OFFSETS_KEY] if snap.summary is not None else None
        if raw:
            ledger = snap.summary[LEDGER_KEY] if snap.summary is not None else None
            deferred = DeferredLedger.decode(ledger) if ledger else DeferredLedger()
            return StoredOffsets(_decode(raw), snap.snapshot_id, deferred)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    if current is not None and current.summary is not None and int(current.summary["total-records"] or 0) > 0:
        raise OffsetsMissing(table.name()[-1], current.snapshot_id)
    return StoredOffsets({}, None)
