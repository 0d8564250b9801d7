"""DeferredWork: the ingest loop's view of its ledger, what changed since the last commit, and
what it hands over on revoke and takes on assign."""

from __future__ import annotations

from k2.deferred_ledger import DeferredLedger
from k2.ingest.deferred_work import DeferredWork

OWNED = {("trades", 0), ("trades", 1)}


def test_a_shed_span_is_pending_and_unsaved_until_collected() -> None:
    work = DeferredWork()
    work.defer("trades", 0, 100, 199, {"tier3"}, 40, since=1.0)
    assert work.unsaved and work.changed("trades", 0) and not work.changed("trades", 1)
    assert work.pending(OWNED) == (40, 1.0)
    assert work.pending_classes("trades", 0) == {"tier3"}
    snapshot = work.for_commit([("trades", 0)])
    work.saved()
    assert not work.unsaved
    assert [(r.first, r.last) for r in snapshot.ranges("trades", 0)] == [(100, 199)]


def test_backfill_takes_ranges_oldest_first_and_only_of_owned_partitions() -> None:
    work = DeferredWork()
    work.defer("trades", 5, 0, 9, {"low"}, 10, since=1.0)
    work.defer("trades", 1, 50, 59, {"tier3"}, 5, since=2.0)
    work.defer("trades", 1, 10, 19, {"tier3"}, 5, since=3.0)
    found = work.next_range(OWNED)
    assert found is not None
    topic, p, r = found
    assert (topic, p, r.first, r.last) == ("trades", 1, 10, 19)
    work.backfilled("trades", 1, 10, 19, landed=5)
    assert work.pending(OWNED) == (5, 2.0)
    assert work.has_pending(OWNED) and not work.has_pending({("trades", 0)})


def test_records_lost_to_retention_are_counted_and_leave_the_ledger() -> None:
    work = DeferredWork()
    work.defer("trades", 0, 0, 99, {"tier3"}, 100, since=1.0)
    assert work.lose("trades", 0, 0, 49) == 50
    assert work.pending(OWNED) == (50, 1.0)


def test_revoke_drops_unsaved_changes_and_assign_adopts_the_tables_ranges() -> None:
    work = DeferredWork()
    work.defer("trades", 0, 0, 9, {"tier3"}, 3, since=1.0)
    work.forget("trades", 0)
    assert not work.unsaved and not work.has_pending(OWNED)
    stored = DeferredLedger()
    stored.add("trades", 1, 20, 29, {"tier2", "tier3"}, 7, since=4.0)
    stored.add("trades", 4, 0, 5, {"low"}, 6, since=5.0)
    work.adopt(stored, "trades", [1])
    assert work.pending(OWNED) == (7, 4.0)
    assert work.pending({("trades", 4)}) == (0, None)
