"""Dedup: the authority on "has this identity already landed?", in bounded memory.

An identity is ``(exchange, symbol, session, seq)``. Per stream key ``(exchange, symbol,
session)`` the seqs seen so far are kept as an interval set: sorted, disjoint, non-adjacent
ranges ``[lo, hi]``. Contiguous runs collapse, so a stream that arrives in order costs one range
however long it runs, and :meth:`Dedup.admit` extends it in O(1) Python.

Invariant: a seq is admitted (True) only if it is in no range of its key and not earlier in the
same call; once admitted it is in a range until the whole key is evicted. Ranges are never
widened over seqs that were not seen, so dedup never drops a message that did not land.

Memory is bounded by dropping whole keys, never by approximating a key:

* ``max_streams`` - beyond it the least recently used key is evicted;
* ``max_age_us`` - :meth:`Dedup.evict` drops keys not touched for longer;
* ``max_ranges_per_stream`` - a key whose set fragments beyond it is evicted (merging ranges
  would claim unseen seqs were seen and silently drop them).

The price of eviction: a duplicate of an evicted key's identity is admitted again and can land
twice. That is why age eviction uses an age longer than any replay or redelivery window, why the
stream bound is sized far above the live key count, and why a restart rebuilds keys from the
table (:meth:`Dedup.restore`) rather than starting empty. Every eviction is counted by reason in
:meth:`Dedup.stats` so it can be alarmed on. No clock is read here: times are caller-supplied.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Dedup", "DedupStats"]

_Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class DedupStats:
    """Current size (``entries``, ``ranges``) and running totals since construction."""

    entries: int
    ranges: int
    admitted: int
    duplicates: int
    evicted_lru: int
    evicted_age: int
    evicted_fragmented: int
    fast_batches: int
    slow_batches: int


class _Stream:
    """Seen seqs of one key: ``lo[i] <= hi[i] < lo[i+1] - 1`` (sorted, disjoint, non-adjacent)."""

    __slots__ = ("hi", "lo", "touched_us")

    def __init__(self, touched_us: int) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.touched_us = touched_us


class Dedup:
    """Admits each identity once per key while the key is retained. Not thread-safe."""

    def __init__(
        self,
        *,
        max_streams: int = 100_000,
        max_age_us: int = 7 * 24 * 3600 * 1_000_000,
        max_ranges_per_stream: int = 4096,
    ) -> None:
        if max_streams < 1 or max_ranges_per_stream < 1 or max_age_us < 0:
            raise ValueError("max_streams and max_ranges_per_stream must be >= 1, max_age_us >= 0")
        self._max_streams = max_streams
        self._max_age_us = max_age_us
        self._max_ranges = max_ranges_per_stream
        # Least recently used first. Touch times are stamped with the largest now_us seen so far,
        # so this order is also oldest-touch-first even if a caller's clock steps back.
        self._streams: OrderedDict[_Key, _Stream] = OrderedDict()
        self._clock = 0
        self._ranges = 0
        self._admitted = 0
        self._duplicates = 0
        self._evicted = {"lru": 0, "age": 0, "fragmented": 0}
        self._fast = 0
        self._slow = 0

    def admit(
        self, exchange: str, symbol: str, session: int, seqs: npt.NDArray[np.int64], now_us: int
    ) -> npt.NDArray[np.bool_]:
        """Return True for each seq not seen before (nor earlier in ``seqs``) and mark it seen."""
        n = len(seqs)
        if n == 0:
            return np.zeros(0, dtype=np.bool_)
        key = (exchange, symbol, session)
        st = self._touch(key, now_us)
        first = int(seqs[0])
        if (not st.hi or first > st.hi[-1]) and self._append_increasing(st, seqs, first):
            self._fast += 1
            self._admitted += n
            mask = np.empty(n, dtype=np.bool_)
            mask.fill(True)
        else:
            self._slow += 1
            mask = self._merge(st, seqs)
            admitted = int(np.count_nonzero(mask))
            self._admitted += admitted
            self._duplicates += n - admitted
        self._bound(key, st)
        return mask

    def restore(
        self, exchange: str, symbol: str, session: int, seen_seqs: npt.NDArray[np.int64], now_us: int
    ) -> None:
        """Mark stored seqs as seen (after a restart), unioned with whatever the key already holds."""
        seqs = np.asarray(seen_seqs, dtype=np.int64)
        if len(seqs) == 0:
            return
        st = self._touch((exchange, symbol, session), now_us)
        self._merge(st, seqs)
        self._bound((exchange, symbol, session), st)

    def evict(self, now_us: int) -> int:
        """Drop keys not touched for more than ``max_age_us``; return how many."""
        self._clock = max(self._clock, now_us)
        cutoff = now_us - self._max_age_us
        evicted = 0
        while self._streams:
            key, st = next(iter(self._streams.items()))
            if st.touched_us >= cutoff:
                break
            self._drop(key, "age")
            evicted += 1
        return evicted

    def ranges(self, exchange: str, symbol: str, session: int) -> list[tuple[int, int]]:
        """The seen ranges of one key (empty if unknown or evicted), without touching it."""
        st = self._streams.get((exchange, symbol, session))
        return [] if st is None else list(zip(st.lo, st.hi, strict=True))

    def stats(self) -> DedupStats:
        return DedupStats(
            entries=len(self._streams),
            ranges=self._ranges,
            admitted=self._admitted,
            duplicates=self._duplicates,
            evicted_lru=self._evicted["lru"],
            evicted_age=self._evicted["age"],
            evicted_fragmented=self._evicted["fragmented"],
            fast_batches=self._fast,
            slow_batches=self._slow,
        )

    # ------------------------------------------------------------------ internals

    def _touch(self, key: _Key, now_us: int) -> _Stream:
        self._clock = max(self._clock, now_us)
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = _Stream(self._clock)
        else:
            self._streams.move_to_end(key)
            st.touched_us = self._clock
        return st

    def _append_increasing(self, st: _Stream, seqs: npt.NDArray[np.int64], first: int) -> bool:
        """Fast path for a batch entirely above the key's max: append it if strictly increasing.

        Returns False (and changes nothing) if it is not strictly increasing.
        """
        if _is_run(seqs, first):  # the common case: one contiguous run
            self._append(st, first, first + len(seqs) - 1)
            return True
        if not bool((seqs[1:] > seqs[:-1]).all()):
            return False
        for lo, hi in _runs(seqs):
            self._append(st, lo, hi)
        return True

    def _append(self, st: _Stream, lo: int, hi: int) -> None:
        """Add ``[lo, hi]`` above every existing range."""
        if st.hi and lo == st.hi[-1] + 1:
            st.hi[-1] = hi
        else:
            st.lo.append(lo)
            st.hi.append(hi)
            self._ranges += 1

    def _merge(self, st: _Stream, seqs: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """General case: any order, repeats, seqs below the max. Returns the admit mask."""
        values, first_idx = np.unique(seqs, return_index=True)
        if st.lo:
            lo = np.asarray(st.lo, dtype=np.int64)
            hi = np.asarray(st.hi, dtype=np.int64)
            j = np.searchsorted(lo, values, "right") - 1
            fresh = (j < 0) | (values > hi[np.maximum(j, 0)])
            values, first_idx = values[fresh], first_idx[fresh]
        mask = np.zeros(len(seqs), dtype=np.bool_)
        mask[first_idx] = True
        if len(values):
            runs = np.asarray(_runs(values), dtype=np.int64).reshape(-1, 2)
            all_lo = np.concatenate((np.asarray(st.lo, dtype=np.int64), runs[:, 0]))
            all_hi = np.concatenate((np.asarray(st.hi, dtype=np.int64), runs[:, 1]))
            order = np.argsort(all_lo, kind="stable")
            all_lo, all_hi = all_lo[order], all_hi[order]
            # Fresh runs never overlap existing ranges, so only adjacency needs coalescing.
            starts = np.concatenate(([True], all_lo[1:] != all_hi[:-1] + 1))
            ends = np.concatenate((starts[1:], [True]))
            self._ranges -= len(st.lo)
            st.lo = all_lo[starts].tolist()
            st.hi = all_hi[ends].tolist()
            self._ranges += len(st.lo)
        return mask

    def _bound(self, key: _Key, st: _Stream) -> None:
        if len(st.lo) > self._max_ranges:
            self._drop(key, "fragmented")
        while len(self._streams) > self._max_streams:
            self._drop(next(iter(self._streams)), "lru")

    def _drop(self, key: _Key, reason: str) -> None:
        st = self._streams.pop(key)
        self._ranges -= len(st.lo)
        self._evicted[reason] += 1


def _is_run(seqs: npt.NDArray[np.int64], first: int) -> bool:
    """True if ``seqs`` is exactly ``first, first+1, ..., first+len-1``.

    Compared as bytes against an ``arange``: for batch-sized arrays this is several times cheaper
    than ``np.all(np.diff(seqs) == 1)``, whose per-call overhead dominates at ~50 rows.
    """
    return seqs.tobytes() == np.arange(first, first + len(seqs), dtype=seqs.dtype).tobytes()


def _runs(values: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers in a strictly increasing array."""
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(values) - 1]))
    return list(zip(values[starts].tolist(), values[ends].tolist(), strict=True))
