"""This process's deferred work: its ledger of shed ranges and which partitions' ranges changed.

Pure bookkeeping over ``k2.deferred_ledger.DeferredLedger`` for the ingest loop; the caller holds
the ingest lock around every call, so a change here and the buffer and offset changes it goes
with are one step (a shed span enters with the consumed offset that moves past it; a backfilled
chunk leaves with the rows that land it). The committer takes the changed partitions with the
ledger in the same locked collect that swaps the buffer out, so the snapshot that lands rows also
records exactly the ranges they settle.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from k2.deferred_ledger import DeferredLedger, DeferredRange

__all__ = ["DeferredWork"]

_Key = tuple[str, int]  # (topic, partition)


class DeferredWork:
    def __init__(self) -> None:
        self._ledger = DeferredLedger()
        self._changed: set[_Key] = set()

    # -- changes from the loop ----------------------------------------------------------------

    def defer(
        self, topic: str, p: int, first: int, last: int, classes: Iterable[str], count: int, since: float
    ) -> None:
        self._ledger.add(topic, p, first, last, classes, count, since)
        self._changed.add((topic, p))

    def backfilled(self, topic: str, p: int, first: int, last: int, landed: int) -> None:
        self._ledger.remove(topic, p, first, last, landed=landed)
        self._changed.add((topic, p))

    def lose(self, topic: str, p: int, first: int, last: int) -> int:
        """Forget records Kafka no longer has; returns the (estimated) messages lost with them."""
        before = sum(r.count for r in self._ledger.ranges(topic, p))
        self._ledger.remove(topic, p, first, last)
        self._changed.add((topic, p))
        return before - sum(r.count for r in self._ledger.ranges(topic, p))

    # -- ownership ----------------------------------------------------------------------------

    def adopt(self, stored: DeferredLedger, topic: str, partitions: Iterable[int]) -> None:
        """Take the table's pending ranges for partitions just assigned (the owner's view wins)."""
        self._ledger = self._ledger.overlay(stored, [(topic, p) for p in partitions])

    def forget(self, topic: str, p: int) -> None:
        """On revoke: unsaved changes go with the buffer; the next owner reads the table."""
        self._ledger.drop_partitions(topic, [p])
        self._changed.discard((topic, p))

    # -- reading ------------------------------------------------------------------------------

    def next_range(self, owned: Collection[_Key]) -> tuple[str, int, DeferredRange] | None:
        """The oldest-offset range of the first owned partition with pending work."""
        for topic, p in self._ledger.partitions():
            if (topic, p) in owned:
                return topic, p, self._ledger.ranges(topic, p)[0]
        return None

    def has_pending(self, owned: Collection[_Key]) -> bool:
        return any(k in owned for k in self._ledger.partitions())

    def pending(self, owned: Collection[_Key]) -> tuple[int, float | None]:
        """(messages pending, oldest ``since``) in the owned partitions."""
        return self._ledger.restrict(owned).pending()

    def pending_classes(self, topic: str, p: int) -> frozenset[str]:
        """Classes with shed messages of this partition still waiting for the backfill."""
        return frozenset().union(*(r.classes for r in self._ledger.ranges(topic, p)))

    @property
    def unsaved(self) -> bool:
        return bool(self._changed)

    def changed(self, topic: str, p: int) -> bool:
        return (topic, p) in self._changed

    def for_commit(self, partitions: Iterable[_Key]) -> DeferredLedger:
        """The ledger of ``partitions`` as it stands, for the snapshot being collected."""
        return self._ledger.restrict(partitions)

    def saved(self) -> None:
        """The collected state is on its way into a snapshot: nothing is unsaved any more."""
        self._changed.clear()
