"""Sequence tracking: what happened to each exchange's numbering, and the live record of gaps.

A market message is ``(exchange, symbol, session, seq)``; ``seq`` counts from 1 within a session
of one exchange+symbol, and a newer ``session`` starts the count again (a *reset*, not a gap).
The ingest calls :meth:`SequenceTracker.observe` once per stream key of a batch, with that key's
seqs in arrival order, and gets back a :class:`Verdict`: which rows to keep and what each was.

Classification of a seq ``s`` against its session's next expected seq ``next``:

==================  ==============================================================  ======
kind                when                                                            kept
==================  ==============================================================  ======
``IN_ORDER``        ``s == next``                                                    yes
``GAP_THEN_ACCEPT`` ``s > next``; ``[next, s-1]`` becomes an open gap                yes
``LATE``            ``s < next`` and inside an open gap (which shrinks or splits)    yes
``DUPLICATE``       ``s < next``, not missing: it already arrived                    no
``LOST_LATE``       ``s < next``, inside a gap already given up as lost              no
``FIRST``           first message ever for the exchange+symbol                       yes
``RESET``           first message of a session newer than every known one            yes
``STALE``           a session that is not retained and older than the newest         no
==================  ==============================================================  ======

``FIRST`` and ``RESET`` with ``s > 1`` record ``[1, s-1]`` as an open gap of the new session.
``STALE`` and ``LOST_LATE`` are not duplicates: the tracker cannot vouch for them, so the caller
routes them to the dead-letter queue rather than dropping or writing them. An unknown session
older than the newest known one is ``STALE`` even when there is room for it, because it cannot
be told apart from a session whose state was evicted.

Gap records (:class:`Gap`) are the durable story of every seq ever found missing. Invariants,
per (exchange, symbol, session):

* the ``open`` records are exactly the seqs currently missing below ``next``, as sorted,
  disjoint ranges (never adjacent as the tracker makes them; :meth:`SequenceTracker.restore`
  may leave a stored open record next to a new one when stored records lag the stored rows);
* all records together (open, filled, lost) partition the set of seqs ever found missing: a late
  arrival of ``s`` in open ``[a, b]`` leaves ``[a, s-1]`` open, ``[s, s]`` filled and ``[s+1, b]``
  open, each keeping the gap's ``detected_at``. A filled record is merged with an adjacent filled
  record of the same ``detected_at`` (the same original gap, filled piece by piece), taking the
  later ``filled_at`` - "all of these were missing since ``detected_at`` and all had arrived by
  ``filled_at``" - so a gap filled in order costs one record, not one per seq;
* a ``lost`` record never changes again (only :meth:`SequenceTracker.restore` reconciles it
  with rows found stored): its seqs are ``LOST_LATE`` if they ever arrive.

Memory is bounded: per exchange+symbol at most ``max_sessions`` sessions are retained (the
oldest is evicted when a newer one starts; its open gaps become lost first), and at most
``max_open_gaps`` open gaps exist in total (beyond it, the oldest by ``detected_at`` become lost
at the end of the call that exceeded it). Filled and lost records live as long as their session.
Each exchange+symbol ever seen keeps a small entry; that set is the instrument universe.

Persistence is the caller's: :meth:`SequenceTracker.take_dirty` names the keys whose records
changed, :meth:`SequenceTracker.gaps` gives the full set of records to overwrite for each, and
:meth:`SequenceTracker.restore` rebuilds a session after a restart from the stored seqs and
records. No clock is read here: every time is a caller-supplied ``now_us``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "Counts",
    "Gap",
    "GapStatus",
    "SeqKind",
    "SequenceTracker",
    "TrackerStats",
    "Verdict",
]

# "deferred" is never a tracker state: it is how an open gap is stored while the messages it is
# missing were shed and wait in the deferred ledger (see k2.ingest.app); restore reads it as open.
GapStatus = Literal["open", "filled", "lost", "deferred"]
_Range = tuple[int, int]


class SeqKind(IntEnum):
    """What one seq was, as stored in :attr:`Verdict.kinds` (an ``int8`` array)."""

    IN_ORDER = 0
    GAP_THEN_ACCEPT = 1
    DUPLICATE = 2
    LATE = 3
    RESET = 4
    FIRST = 5
    STALE = 6
    LOST_LATE = 7


_N_KINDS = len(SeqKind)


@dataclass(frozen=True, slots=True)
class Gap:
    """A range of seqs ``[first_seq, last_seq]`` of one session found missing at ``detected_at``.

    ``status`` is ``open`` (still missing), ``filled`` (all arrived; ``filled_at`` says when the
    last one did) or ``lost`` (given up: expired, pushed out by the open-gap bound, or its
    session evicted). Times are caller-supplied microseconds.
    """

    exchange: str
    symbol: str
    session: int
    first_seq: int
    last_seq: int
    detected_at: int
    status: GapStatus
    filled_at: int | None = None

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1


# Counts and Verdict are msgspec Structs, not dataclasses: one of each is built per stream key per
# batch on the hot path, and a frozen Struct is about ten times cheaper to construct.
class Counts(msgspec.Struct, frozen=True):
    """How many seqs of one :meth:`SequenceTracker.observe` call fell into each :class:`SeqKind`."""

    in_order: int = 0
    gap_then_accept: int = 0
    duplicate: int = 0
    late: int = 0
    reset: int = 0
    first: int = 0
    stale: int = 0
    lost_late: int = 0

    @classmethod
    def _from_kinds(cls, kinds: npt.NDArray[np.int8]) -> Counts:
        c = np.bincount(kinds, minlength=_N_KINDS).tolist()
        return cls(
            in_order=c[SeqKind.IN_ORDER],
            gap_then_accept=c[SeqKind.GAP_THEN_ACCEPT],
            duplicate=c[SeqKind.DUPLICATE],
            late=c[SeqKind.LATE],
            reset=c[SeqKind.RESET],
            first=c[SeqKind.FIRST],
            stale=c[SeqKind.STALE],
            lost_late=c[SeqKind.LOST_LATE],
        )


class Verdict(msgspec.Struct, frozen=True):
    """The decision for one call: ``keep[i]`` says whether row ``i`` should be written.

    ``kinds[i]`` is the :class:`SeqKind` of row ``i``; ``keep`` is False exactly for
    ``DUPLICATE``, ``STALE`` and ``LOST_LATE``. ``new_gaps`` counts gaps detected by this call.
    """

    keep: npt.NDArray[np.bool_]
    kinds: npt.NDArray[np.int8]
    counts: Counts
    new_gaps: int = 0

    @property
    def dlq(self) -> npt.NDArray[np.bool_]:
        """Rows the tracker cannot vouch for (``STALE``, ``LOST_LATE``): dead-letter them."""
        result: npt.NDArray[np.bool_] = (self.kinds == SeqKind.STALE) | (self.kinds == SeqKind.LOST_LATE)
        return result


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Running totals since construction (``open_gap_count`` is current)."""

    in_order: int
    first: int
    gaps: int
    duplicates: int
    late: int
    resets: int
    stale: int
    lost_late: int
    lost: int
    open_gap_count: int
    fast_batches: int
    slow_batches: int


@dataclass(slots=True)
class _Session:
    """State of one session. ``open``/``lost`` are sorted by ``first_seq``; ``*_starts`` mirror them."""

    next: int
    open_starts: list[int] = field(default_factory=list)
    open: list[Gap] = field(default_factory=list)
    lost_starts: list[int] = field(default_factory=list)
    lost: list[Gap] = field(default_factory=list)
    filled_by_first: dict[int, Gap] = field(default_factory=dict)
    filled_by_last: dict[int, Gap] = field(default_factory=dict)

    def records(self) -> list[Gap]:
        return sorted([*self.open, *self.filled_by_first.values(), *self.lost], key=lambda g: g.first_seq)

    def open_index(self, seq: int) -> int:
        """Index of the open gap containing ``seq``, or -1."""
        i = bisect_right(self.open_starts, seq) - 1
        return i if i >= 0 and self.open[i].last_seq >= seq else -1

    def in_lost(self, seq: int) -> bool:
        i = bisect_right(self.lost_starts, seq) - 1
        return i >= 0 and self.lost[i].last_seq >= seq

    def add_open(self, gap: Gap) -> None:
        i = bisect_right(self.open_starts, gap.first_seq)
        self.open_starts.insert(i, gap.first_seq)
        self.open.insert(i, gap)

    def add_lost(self, gap: Gap) -> None:
        i = bisect_right(self.lost_starts, gap.first_seq)
        self.lost_starts.insert(i, gap.first_seq)
        self.lost.insert(i, gap)

    def add_filled(self, gap: Gap) -> None:
        """Add a filled record, merging with filled neighbours from the same original gap."""
        left = self.filled_by_last.get(gap.first_seq - 1)
        if left is not None and left.detected_at == gap.detected_at:
            del self.filled_by_first[left.first_seq], self.filled_by_last[left.last_seq]
            gap = replace(gap, first_seq=left.first_seq, filled_at=_later(left.filled_at, gap.filled_at))
        right = self.filled_by_first.get(gap.last_seq + 1)
        if right is not None and right.detected_at == gap.detected_at:
            del self.filled_by_first[right.first_seq], self.filled_by_last[right.last_seq]
            gap = replace(gap, last_seq=right.last_seq, filled_at=_later(right.filled_at, gap.filled_at))
        self.filled_by_first[gap.first_seq] = gap
        self.filled_by_last[gap.last_seq] = gap


def _later(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


class SequenceTracker:
    """Classifies seqs per (exchange, symbol, session) and keeps the gap records.

    One instance per Kafka topic partition: the caller keeps streams apart. Not thread-safe.
    """

    def __init__(self, *, max_sessions: int = 2, max_open_gaps: int = 10_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if max_open_gaps < 0:
            raise ValueError("max_open_gaps must be >= 0")
        self._max_sessions = max_sessions
        self._max_open_gaps = max_open_gaps
        self._keys: dict[tuple[str, str], dict[int, _Session]] = {}
        # Oldest-first index of open gaps: (detected_at, serial, exchange, symbol, session, first_seq).
        # Entries go stale as gaps fill or split; each is checked against live state when popped,
        # and the heap is rebuilt when stale entries dominate.
        self._heap: list[tuple[int, int, str, str, int, int]] = []
        self._serial = 0
        self._open_count = 0
        self._dirty: set[tuple[str, str, int]] = set()
        # Records of evicted sessions: not yet returned by take_dirty, and returned by the last one.
        self._pending: dict[tuple[str, str, int], list[Gap]] = {}
        self._announced: dict[tuple[str, str, int], list[Gap]] = {}
        self._n = dict.fromkeys(
            ("in_order", "first", "gaps", "duplicates", "late", "resets", "stale", "lost_late", "lost"), 0
        )
        self._fast = 0
        self._slow = 0

    # ------------------------------------------------------------------ observe

    def observe(
        self, exchange: str, symbol: str, session: int, seqs: npt.NDArray[np.int64], now_us: int
    ) -> Verdict:
        """Classify ``seqs`` (one stream key, arrival order) and update the state.

        Seqs must be >= 1 (the wire validation guarantees it). The common case - the batch
        continues exactly where the session left off - costs O(1) Python and one vectorised
        comparison; only a batch with something out of place is walked seq by seq.
        """
        n = len(seqs)
        sessions = self._keys.get((exchange, symbol))
        st = sessions.get(session) if sessions is not None else None
        if st is not None and n > 0 and int(seqs[0]) == st.next and _is_run(seqs, st.next):
            st.next += n
            self._n["in_order"] += n
            self._fast += 1
            return Verdict(_all_true(n), np.zeros(n, dtype=np.int8), Counts(in_order=n))
        if n == 0:
            return Verdict(_all_true(0), np.zeros(0, dtype=np.int8), Counts())
        self._slow += 1
        return self._observe_slow(exchange, symbol, session, seqs, now_us)

    def _observe_slow(
        self, exchange: str, symbol: str, session: int, seqs: npt.NDArray[np.int64], now_us: int
    ) -> Verdict:
        if int(seqs.min()) < 1:
            raise ValueError(f"{exchange}/{symbol}/{session}: seq must be >= 1, got {int(seqs.min())}")
        values: list[int] = seqs.tolist()
        n = len(values)
        kinds = np.zeros(n, dtype=np.int8)
        key3 = (exchange, symbol, session)
        new_gaps = 0
        changed = False
        head: SeqKind | None = None  # FIRST or RESET: the kind of values[0] if it opens a session
        sessions = self._keys.get((exchange, symbol))
        st = sessions.get(session) if sessions is not None else None
        if st is None:
            if sessions is not None and session < max(sessions):
                kinds[:] = SeqKind.STALE
                self._n["stale"] += n
                return Verdict(np.zeros(n, dtype=np.bool_), kinds, Counts(stale=n))
            head = SeqKind.FIRST if sessions is None else SeqKind.RESET
            self._n["first" if head == SeqKind.FIRST else "resets"] += 1
            st = self._start_session(exchange, symbol, session)

        # Walk runs of consecutive seqs, not seqs: once a run's head is accepted at or above
        # ``next`` the rest of the run is in order, so a large batch with one gap stays cheap.
        run_ends = (np.flatnonzero(np.diff(seqs) != 1) + 1).tolist()
        run_ends.append(n)
        r = 0
        nxt = st.next
        i = 0
        while i < n:
            while run_ends[r] <= i:
                r += 1
            s = values[i]
            if s >= nxt:
                if s > nxt:
                    kinds[i] = SeqKind.GAP_THEN_ACCEPT
                    self._open_gap(key3, st, nxt, s - 1, now_us)
                    new_gaps += 1
                    changed = True
                if i == 0 and head is not None:
                    kinds[0] = head
                nxt = s + run_ends[r] - i
                i = run_ends[r]
                continue
            j = st.open_index(s) if st.open else -1
            if j >= 0:
                kinds[i] = SeqKind.LATE
                self._fill(key3, st, j, s, now_us)
                changed = True
            elif st.lost and st.in_lost(s):
                kinds[i] = SeqKind.LOST_LATE
            else:
                kinds[i] = SeqKind.DUPLICATE
            i += 1
        st.next = nxt

        if changed:
            self._dirty.add(key3)
        counts = Counts._from_kinds(kinds)
        self._n["in_order"] += counts.in_order
        self._n["gaps"] += new_gaps
        self._n["duplicates"] += counts.duplicate
        self._n["late"] += counts.late
        self._n["lost_late"] += counts.lost_late
        self._enforce_open_bound()
        keep = (kinds != SeqKind.DUPLICATE) & (kinds != SeqKind.LOST_LATE)
        return Verdict(keep, kinds, counts, new_gaps)

    # ------------------------------------------------------------------ gap bookkeeping

    def _start_session(self, exchange: str, symbol: str, session: int) -> _Session:
        """Create a session's state, evicting the oldest sessions beyond ``max_sessions``."""
        sessions = self._keys.setdefault((exchange, symbol), {})
        st = _Session(next=1)
        sessions[session] = st
        while len(sessions) > self._max_sessions:
            self._evict_session(exchange, symbol, min(sessions))
        return st

    def _evict_session(self, exchange: str, symbol: str, session: int) -> None:
        """Drop a session's state; its open gaps become lost and its records wait in ``_pending``."""
        st = self._keys[(exchange, symbol)].pop(session)
        key3 = (exchange, symbol, session)
        for gap in list(st.open):
            self._mark_lost(key3, st, gap)
        if key3 in self._dirty:
            self._pending[key3] = st.records()

    def _push(self, gap: Gap) -> None:
        self._serial += 1
        heapq.heappush(
            self._heap, (gap.detected_at, self._serial, gap.exchange, gap.symbol, gap.session, gap.first_seq)
        )

    def _open_gap(self, key3: tuple[str, str, int], st: _Session, first: int, last: int, now_us: int) -> None:
        gap = Gap(key3[0], key3[1], key3[2], first, last, now_us, "open")
        st.add_open(gap)
        self._open_count += 1
        self._push(gap)

    def _fill(self, key3: tuple[str, str, int], st: _Session, j: int, s: int, now_us: int) -> None:
        """Seq ``s`` arrived inside open gap ``st.open[j]``: shrink or split it."""
        gap = st.open[j]
        del st.open[j], st.open_starts[j]
        self._open_count -= 1
        if gap.first_seq < s:
            # Same start and detected_at as the gap: its heap entry still finds it.
            st.add_open(replace(gap, last_seq=s - 1))
            self._open_count += 1
        if s < gap.last_seq:
            right = replace(gap, first_seq=s + 1)
            st.add_open(right)
            self._open_count += 1
            self._push(right)
        st.add_filled(replace(gap, first_seq=s, last_seq=s, status="filled", filled_at=now_us))

    def _mark_lost(self, key3: tuple[str, str, int], st: _Session, gap: Gap) -> None:
        j = bisect_right(st.open_starts, gap.first_seq) - 1
        del st.open[j], st.open_starts[j]
        self._open_count -= 1
        st.add_lost(replace(gap, status="lost"))
        self._n["lost"] += 1
        self._dirty.add(key3)

    def _live_open(self, entry: tuple[int, int, str, str, int, int]) -> tuple[_Session, Gap] | None:
        """The open gap a heap entry refers to, if it is still open with the same detection time."""
        detected_at, _, exchange, symbol, session, first = entry
        st = self._keys.get((exchange, symbol), {}).get(session)
        if st is None:
            return None
        j = bisect_right(st.open_starts, first) - 1
        if j < 0 or st.open_starts[j] != first or st.open[j].detected_at != detected_at:
            return None
        return st, st.open[j]

    def _pop_oldest_open(self) -> tuple[_Session, Gap] | None:
        while self._heap:
            live = self._live_open(heapq.heappop(self._heap))
            if live is not None:
                return live
        return None

    def _enforce_open_bound(self) -> None:
        while self._open_count > self._max_open_gaps:
            live = self._pop_oldest_open()
            if live is None:  # pragma: no cover - the heap always indexes every open gap
                break
            st, gap = live
            self._mark_lost((gap.exchange, gap.symbol, gap.session), st, gap)
        if len(self._heap) > 4 * self._open_count + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = []
        for sessions in self._keys.values():
            for st in sessions.values():
                for gap in st.open:
                    self._serial += 1
                    self._heap.append(
                        (gap.detected_at, self._serial, gap.exchange, gap.symbol, gap.session, gap.first_seq)
                    )
        heapq.heapify(self._heap)

    # ------------------------------------------------------------------ expiry, persistence, stats

    def expire(self, now_us: int, max_age_us: int) -> int:
        """Mark open gaps detected more than ``max_age_us`` before ``now_us`` as lost; return how many.

        A lost seq that arrives later is ``LOST_LATE`` (not kept), so the table never holds a row
        its gap record says is lost.
        """
        marked = 0
        cutoff = now_us - max_age_us
        while self._heap and self._heap[0][0] < cutoff:
            live = self._live_open(heapq.heappop(self._heap))
            if live is not None:
                st, gap = live
                self._mark_lost((gap.exchange, gap.symbol, gap.session), st, gap)
                marked += 1
        return marked

    def declare_lost(self, symbols: Callable[[str], bool]) -> int:
        """Mark every open gap of the symbols ``symbols`` accepts as lost; return how many.

        For messages that will never come: a deferred range Kafka's retention deleted before it
        could be backfilled. Like :meth:`expire`, a lost seq that arrives later is ``LOST_LATE``.
        """
        marked = 0
        for (exchange, symbol), sessions in self._keys.items():
            if not symbols(symbol):
                continue
            for session, st in sessions.items():
                for gap in list(st.open):
                    self._mark_lost((exchange, symbol, session), st, gap)
                    marked += 1
        return marked

    def take_dirty(self) -> list[tuple[str, str, int]]:
        """Return and clear the keys whose gap records changed since the last call.

        For each returned key, :meth:`gaps` gives the records to store, even for an evicted
        session - until the next call of this method.
        """
        dirty = sorted(self._dirty)
        self._dirty = set()
        self._announced = self._pending
        self._pending = {}
        return dirty

    def gaps(self, exchange: str, symbol: str, session: int) -> list[Gap]:
        """All records (open, filled, lost) of one session, sorted by ``first_seq``."""
        st = self._keys.get((exchange, symbol), {}).get(session)
        if st is not None:
            return st.records()
        key3 = (exchange, symbol, session)
        return list(self._pending.get(key3) or self._announced.get(key3) or [])

    def open_gaps(self) -> list[Gap]:
        """Every open gap, sorted by key then ``first_seq``."""
        return [
            gap
            for (exchange, symbol), sessions in sorted(self._keys.items())
            for _, st in sorted(sessions.items())
            for gap in st.open
        ]

    def next_seq(self, exchange: str, symbol: str, session: int) -> int | None:
        """The next expected seq of a retained session, or None if it is not retained."""
        st = self._keys.get((exchange, symbol), {}).get(session)
        return None if st is None else st.next

    def stats(self) -> TrackerStats:
        return TrackerStats(
            **self._n, open_gap_count=self._open_count, fast_batches=self._fast, slow_batches=self._slow
        )

    # ------------------------------------------------------------------ restore

    def restore(
        self,
        exchange: str,
        symbol: str,
        session: int,
        seen_seqs: npt.NDArray[np.int64],
        records: list[Gap],
        now_us: int,
    ) -> None:
        """Rebuild one session after a restart from the seqs already stored and its stored records.

        ``next`` becomes ``max(seen) + 1``. Every hole in ``[1, max]`` is missing: it keeps the
        stored record covering it (open or lost, with its ``detected_at``) or gets a new open
        record detected at ``now_us``. Stored records are reconciled with the seqs: seen parts of
        an open or lost record become filled at ``now_us``; unseen parts of a filled record become
        open again; parts above ``max`` or overlapping an earlier record are dropped. Any change
        marks the key dirty so it is persisted. Records of other keys are ignored. With no seen
        seqs there is nothing to judge against and the session is left unknown.

        Call it for the newest ``max_sessions`` sessions of a key, oldest first; restoring more
        evicts the oldest, as :meth:`observe` would.
        """
        seen = np.unique(np.asarray(seen_seqs, dtype=np.int64))
        if len(seen) == 0:
            return
        if int(seen[0]) < 1:
            raise ValueError(f"{exchange}/{symbol}/{session}: seq must be >= 1, got {int(seen[0])}")
        key3 = (exchange, symbol, session)
        top = int(seen[-1])
        st = _Session(next=top + 1)
        dirty = False
        cover_hi = 0  # every seq <= cover_hi is claimed by an earlier (sorted) record
        claimed: list[_Range] = []  # unseen ranges claimed by a stored record
        own = sorted(
            (g for g in records if (g.exchange, g.symbol, g.session) == key3),
            key=lambda g: (g.first_seq, g.last_seq),
        )
        for rec in own:
            first, last = max(rec.first_seq, cover_hi + 1), min(rec.last_seq, top)
            if first > last:
                dirty = True
                continue
            cover_hi = max(cover_hi, last)
            seen_runs, unseen_runs = _split(seen, first, last)
            if (first, last) != (rec.first_seq, rec.last_seq):
                dirty = True
            claimed.extend(unseen_runs)
            if rec.status == "filled":
                for a, b in seen_runs:
                    st.add_filled(replace(rec, first_seq=a, last_seq=b))
                for a, b in unseen_runs:
                    st.add_open(replace(rec, first_seq=a, last_seq=b, status="open", filled_at=None))
                dirty = dirty or bool(unseen_runs)
            else:
                for a, b in seen_runs:
                    st.add_filled(replace(rec, first_seq=a, last_seq=b, status="filled", filled_at=now_us))
                add = st.add_open if rec.status == "open" else st.add_lost
                for a, b in unseen_runs:
                    add(replace(rec, first_seq=a, last_seq=b))
                dirty = dirty or bool(seen_runs)
        for a, b in _subtract(_holes(seen), sorted(claimed)):
            st.add_open(Gap(exchange, symbol, session, a, b, now_us, "open"))
            dirty = True

        old = self._keys.get((exchange, symbol), {}).get(session)
        if old is not None:
            self._open_count -= len(old.open)
        self._pending.pop(key3, None)
        self._announced.pop(key3, None)
        sessions = self._keys.setdefault((exchange, symbol), {})
        sessions[session] = st
        self._open_count += len(st.open)
        for gap in st.open:
            self._push(gap)
        if dirty:
            self._dirty.add(key3)
        while len(sessions) > self._max_sessions:
            self._evict_session(exchange, symbol, min(sessions))
        self._enforce_open_bound()


def _is_run(seqs: npt.NDArray[np.int64], first: int) -> bool:
    """True if ``seqs`` is exactly ``first, first+1, ..., first+len-1``.

    Compared as bytes against an ``arange``: for batch-sized arrays this is several times cheaper
    than ``np.all(np.diff(seqs) == 1)``, whose per-call overhead dominates at ~50 rows.
    """
    return seqs.tobytes() == np.arange(first, first + len(seqs), dtype=seqs.dtype).tobytes()


def _all_true(n: int) -> npt.NDArray[np.bool_]:
    mask = np.empty(n, dtype=np.bool_)
    mask.fill(True)
    return mask


def _runs(values: npt.NDArray[np.int64]) -> list[_Range]:
    """Maximal runs of consecutive integers in a sorted, unique array."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(values) - 1]))
    return list(zip(values[starts].tolist(), values[ends].tolist(), strict=True))


def _holes(seen: npt.NDArray[np.int64]) -> list[_Range]:
    """Ranges of ``[1, max(seen)]`` not in ``seen`` (sorted, unique)."""
    bounds = np.concatenate(([0], seen))
    idx = np.flatnonzero(np.diff(bounds) > 1)
    return list(zip((bounds[idx] + 1).tolist(), (bounds[idx + 1] - 1).tolist(), strict=True))


def _split(seen: npt.NDArray[np.int64], first: int, last: int) -> tuple[list[_Range], list[_Range]]:
    """Split ``[first, last]`` into runs present in ``seen`` and runs absent from it."""
    inside = seen[np.searchsorted(seen, first, "left") : np.searchsorted(seen, last, "right")]
    present = _runs(inside)
    return present, _subtract([(first, last)], present)


def _subtract(ranges: list[_Range], minus: list[_Range]) -> list[_Range]:
    """``ranges`` minus ``minus``; both sorted and disjoint."""
    out: list[_Range] = []
    j = 0
    for a, b in ranges:
        lo = a
        while j < len(minus) and minus[j][1] < lo:
            j += 1
        k = j
        while k < len(minus) and minus[k][0] <= b:
            if minus[k][0] > lo:
                out.append((lo, minus[k][0] - 1))
            lo = max(lo, minus[k][1] + 1)
            k += 1
        if lo <= b:
            out.append((lo, b))
    return out
