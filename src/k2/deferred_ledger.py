"""The deferred ledger: which Kafka records hold shed messages still to be backfilled.

Shedding defers, it never drops. Per ``(topic, partition)`` the ledger keeps inclusive offset
ranges of records holding shed messages, each with the **classes** that were shed in it (see
``k2.shedding``). A backfill re-reads a range and lands exactly the messages whose class is in
the range's classes, then removes the range in the same Iceberg commit as those rows. The ledger
travels in the snapshot summary next to ``k2.offsets`` (:meth:`DeferredLedger.encode`), so a
restart or a new partition owner finds the same pending work.

Invariants of each partition's ranges:

* sorted and disjoint;
* **maximal runs**: two adjacent ranges (``a.last + 1 == b.first``) have different classes.
  Equal-class neighbours merge (counts add up, ``since`` is the earlier). Ranges with different
  classes are never merged into their union: a backfill of ``{tier2, tier3}`` over records
  where only tier 3 was shed would land tier-2 messages a second time. Where adds overlap, the
  overlap gets the union, as each of its records was shed under either set.

So the ledger stays small when the caller records, for each batch with shed messages, the whole
offset span the batch consumed from the partition (not just first..last shed offset):
consecutive batches at one level are then adjacent with equal classes and coalesce, leaving
about one range per partition per level change.

**Counts** (messages shed in a range) are exact while ranges only merge. Cutting a range (a
partial :meth:`~DeferredLedger.remove`, an overlapping add) leaves pieces whose counts are not
known; each piece gets the range's count in proportion to its offset span, rounded up (an
estimate, as shed messages need not be spread evenly; rounding up means a piece cut from a
range with messages never reads 0, and one middle cut can add 1 to the total). A backfill
that knows how many messages it landed passes ``landed`` to ``remove`` and the pieces share
exactly what remains (possibly 0). Counts only feed the "messages pending" metric: which
records are re-read depends on the ranges alone, so no count error can lose or duplicate data.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["LEDGER_KEY", "DeferredLedger", "DeferredRange"]

LEDGER_KEY = "k2.deferred"
_FORMAT_VERSION = 1

_Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DeferredRange:
    """Records ``first..last`` (inclusive) hold ``count`` shed messages of ``classes``.

    ``since`` is the wall-clock epoch seconds of the first shed message (kept to the millisecond
    in the encoded form), so "oldest pending" can be reported and alarmed on.
    """

    first: int
    last: int
    classes: frozenset[str]
    count: int
    since: float

    @property
    def span(self) -> int:
        return self.last - self.first + 1


@dataclass(slots=True)
class _Piece:
    """A range under construction: its count as an exact fraction until it is rounded."""

    first: int
    last: int
    classes: frozenset[str]
    share: Fraction
    since: float

    def done(self) -> DeferredRange:
        return DeferredRange(self.first, self.last, self.classes, math.ceil(self.share), self.since)


class DeferredLedger:
    """Pending shed ranges per ``(topic, partition)``; see the module docstring for invariants."""

    def __init__(self) -> None:
        self._parts: dict[_Partition, list[DeferredRange]] = {}

    # -- reading --------------------------------------------------------------------------------

    def ranges(self, topic: str, partition: int) -> list[DeferredRange]:
        return list(self._parts.get((topic, partition), ()))

    def partitions(self) -> list[_Partition]:
        """Partitions with pending ranges, sorted."""
        return sorted(self._parts)

    def pending(self) -> tuple[int, float | None]:
        """(messages pending, ``since`` of the oldest pending range or None when empty)."""
        ranges = [r for rs in self._parts.values() for r in rs]
        return sum(r.count for r in ranges), min((r.since for r in ranges), default=None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeferredLedger) and self._parts == other._parts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        n = sum(len(rs) for rs in self._parts.values())
        return f"DeferredLedger({len(self._parts)} partitions, {n} ranges)"

    # -- changing -------------------------------------------------------------------------------

    def add(
        self,
        topic: str,
        partition: int,
        first: int,
        last: int,
        classes: Iterable[str],
        count: int,
        since: float,
    ) -> None:
        """Record that records ``first..last`` hold ``count`` shed messages of ``classes``.

        Raises:
            ValueError: ``first > last``, ``first < 0``, ``count < 0`` or no classes.
        """
        new = DeferredRange(first, last, frozenset(classes), count, since)
        if first < 0 or first > last or count < 0 or not new.classes:
            raise ValueError(f"invalid deferred range for {topic}[{partition}]: {new}")
        ranges = self._parts.setdefault((topic, partition), [])
        # Everything overlapping or adjacent to the new range is rebuilt together with it.
        lo = bisect.bisect_left(ranges, first - 1, key=lambda r: r.last)
        hi = bisect.bisect_right(ranges, last + 1, key=lambda r: r.first)
        ranges[lo:hi] = _rebuild(ranges[lo:hi], new)

    def remove(self, topic: str, partition: int, first: int, last: int, landed: int | None = None) -> None:
        """Forget records ``first..last`` (backfilled); ranges reaching beyond it are cut.

        ``landed``: messages the backfill landed from ``first..last``. With it, the pieces left
        of cut ranges share exactly what remains (the overlapped ranges' counts minus
        ``landed``); without it, each piece keeps its range's count pro rata to its span.
        """
        key = (topic, partition)
        ranges = self._parts.get(key)
        if not ranges or first > last:
            return
        lo = bisect.bisect_left(ranges, first, key=lambda r: r.last)
        hi = bisect.bisect_right(ranges, last, key=lambda r: r.first)
        hit = ranges[lo:hi]
        if not hit:
            return
        pieces: list[tuple[DeferredRange, int, int]] = []  # (cut range, first, last)
        if hit[0].first < first:
            pieces.append((hit[0], hit[0].first, first - 1))
        if hit[-1].last > last:
            pieces.append((hit[-1], last + 1, hit[-1].last))
        if landed is None:
            shares = [_pro_rata(r, b - a + 1) for r, a, b in pieces]
        else:
            remaining = max(sum(r.count for r in hit) - landed, 0)
            total_span = sum(b - a + 1 for _, a, b in pieces) or 1
            shares = [Fraction(remaining * (b - a + 1), total_span) for _, a, b in pieces]
        ranges[lo:hi] = [
            _Piece(a, b, r.classes, share, r.since).done()
            for (r, a, b), share in zip(pieces, shares, strict=True)
        ]
        if not ranges:
            del self._parts[key]

    def drop_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """Forget partitions this process no longer owns (on revoke); their owner reads the table."""
        for p in partitions:
            self._parts.pop((topic, p), None)

    # -- combining ------------------------------------------------------------------------------

    def restrict(self, partitions: Iterable[_Partition]) -> DeferredLedger:
        """A copy holding only ``partitions`` (``(topic, partition)`` pairs)."""
        out = DeferredLedger()
        for key in partitions:
            if key in self._parts:
                out._parts[key] = list(self._parts[key])
        return out

    def overlay(self, other: DeferredLedger, partitions: Iterable[_Partition]) -> DeferredLedger:
        """A copy of this ledger with ``partitions`` taken from ``other`` (empty if it has none).

        Each partition has one owner whose view wins, as with ``k2.offsets``: on assign,
        ``mine.overlay(stored, assigned)`` adopts the table's pending ranges; on commit,
        ``stored.overlay(mine, owned)`` writes this process's partitions over the previous
        snapshot's and keeps the rest. Not a union: a range this process has backfilled must not
        come back from an older snapshot (it would be landed twice).
        """
        out = self.restrict(self._parts)
        for key in set(partitions):
            out._parts.pop(key, None)
            if key in other._parts:
                out._parts[key] = list(other._parts[key])
        return out

    # -- storage --------------------------------------------------------------------------------

    def encode(self) -> str:
        """Compact JSON for the ``k2.deferred`` snapshot summary property.

        Every retained snapshot carries its own copy in the table metadata, so size matters: a
        range is ``[gap, length, count, since, classes]`` with ``gap`` = ``first`` minus the
        previous range's ``last`` (the first range: ``first`` itself), ``length`` =
        ``last - first``, ``since`` in milliseconds after the ledger's oldest (``since0``), and
        ``classes`` an index into the ledger's table of class sets. About 30 bytes a range:
        5,000 ranges take about 150 KB.
        """
        class_sets = sorted({r.classes for rs in self._parts.values() for r in rs}, key=sorted)
        index = {c: i for i, c in enumerate(class_sets)}
        since0 = min((_ms(r.since) for rs in self._parts.values() for r in rs), default=0)
        topics: dict[str, dict[str, list[list[int]]]] = {}
        for (topic, partition), ranges in sorted(self._parts.items()):
            rows: list[list[int]] = []
            prev = 0
            for r in ranges:
                rows.append(
                    [r.first - prev, r.last - r.first, r.count, _ms(r.since) - since0, index[r.classes]]
                )
                prev = r.last
            topics.setdefault(topic, {})[str(partition)] = rows
        data = {
            "v": _FORMAT_VERSION,
            "since0": since0,
            "classes": [sorted(c) for c in class_sets],
            "ranges": topics,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> DeferredLedger:
        """The ledger :meth:`encode` wrote (``since`` to the millisecond).

        Raises:
            ValueError: not a ledger this version of k2 can read.
        """
        try:
            data = json.loads(text)
            if data.get("v") != _FORMAT_VERSION:
                raise ValueError(f"unsupported deferred ledger version {data.get('v')!r}")
            since0 = int(data["since0"])
            class_sets = data["classes"]
            if not all(_is_class_list(c) for c in class_sets):
                raise ValueError(f"malformed class sets {class_sets!r}")
            out = cls()
            for topic, partitions in data["ranges"].items():
                for partition, rows in partitions.items():
                    prev = -1
                    for n, (gap, length, count, since_ms, classes) in enumerate(rows):
                        first = (0 if n == 0 else prev) + int(gap)
                        if first <= prev or length < 0 or not 0 <= classes < len(class_sets):
                            raise ValueError(f"{topic}[{partition}] range {n} out of order or malformed")
                        prev = first + int(length)
                        since = (since0 + int(since_ms)) / 1000
                        out.add(topic, int(partition), first, prev, class_sets[classes], int(count), since)
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed deferred ledger: {exc}") from exc
        return out


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _rebuild(existing: list[DeferredRange], new: DeferredRange) -> list[DeferredRange]:
    """``existing`` (sorted, disjoint, each overlapping or touching ``new``) plus ``new``, as
    maximal runs.

    Cut at every boundary, each elementary segment takes the union of the classes covering it
    (the existing range there and/or ``new``), a pro rata share of each covering range's count,
    and the earliest ``since``; then equal-class neighbours join. A range that is not cut
    contributes its whole count, so merges of touching ranges stay exact.
    """
    if not existing:
        return [new]
    everything = [*existing, new]
    bounds = sorted({r.first for r in everything} | {r.last + 1 for r in everything})
    merged: list[_Piece] = []
    i = 0
    for a, end in itertools.pairwise(bounds):
        b = end - 1
        while i < len(existing) and existing[i].last < a:
            i += 1
        cover = [r for r in (existing[i] if i < len(existing) else None, new) if r and r.first <= a <= r.last]
        if not cover:
            continue
        classes = frozenset().union(*(r.classes for r in cover))
        share = sum((_pro_rata(r, b - a + 1) for r in cover), Fraction(0))
        since = min(r.since for r in cover)
        prev = merged[-1] if merged else None
        if prev is not None and prev.classes == classes and prev.last + 1 == a:
            prev.last, prev.share, prev.since = b, prev.share + share, min(prev.since, since)
        else:
            merged.append(_Piece(a, b, classes, share, since))
    return [p.done() for p in merged]


def _is_class_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(c, str) for c in value)


def _pro_rata(r: DeferredRange, span: int) -> Fraction:
    """The part of ``r.count`` that falls in ``span`` of its offsets (exact: no float drift)."""
    return Fraction(r.count * span, r.span)
