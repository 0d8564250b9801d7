"""Admission: which messages of a fetched batch are processed now, and which are deferred.

The one step between fetching and decoding where load shedding acts. It runs on the Kafka keys
(the symbol) and the stream, before any JSON is parsed, so a shed message costs a key lookup,
not a parse: shedding saves the work it claims to save. (Sequencing and dedup need parsed rows,
so admission cannot wait until after them without paying for the parse it is meant to skip.)

Pure: arrays in, an :class:`Admission` out. Shed messages are never dropped: the admission names,
per partition, the whole offset span the batch covered and how many messages in it were shed, and
the caller records that span in the deferred ledger with the shed classes, in the same step that
moves the partition's consumed offset past it. Consecutive batches at one level then coalesce into
one ledger range, and a backfill re-reads the span and lands exactly the messages of those classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from k2.degradation import Level
from k2.shedding import LOW, REFERENCE_STREAM, TIER_CLASSES, LoadShedder, shed_classes

__all__ = ["KEEP_ALL", "Admission", "DeferredSpan", "admit", "needs_keys"]


@dataclass(frozen=True, slots=True)
class DeferredSpan:
    """Records ``first..last`` of ``partition`` (the batch's span) hold ``count`` shed messages."""

    partition: int
    first: int
    last: int
    count: int


@dataclass(frozen=True, slots=True)
class Admission:
    keep: npt.NDArray[np.bool_] | None  # None: keep every message (nothing shed)
    deferred: list[DeferredSpan]
    classes: frozenset[str]  # what was shed; the ledger stores it with each span
    shed_by_class: dict[str, int]  # messages shed, per class (for the report and metrics)

    @property
    def sheds(self) -> bool:
        return self.keep is not None


KEEP_ALL = Admission(None, [], frozenset(), {})
"""Nothing shed: the admission of every batch at NORMAL and SOFT."""


def admit(
    shedder: LoadShedder | None,
    level: Level,
    stream: str,
    keys: Sequence[bytes | None] | None,
    partitions: npt.NDArray[np.int32],
    offsets: npt.NDArray[np.int64],
) -> Admission:
    """Decide for a whole batch of one stream; ``keys`` may be None when nothing can be shed.

    ``partitions``/``offsets`` are parallel to ``keys`` (offsets grow within a partition).
    """
    if shedder is None or keys is None or not shed_classes(level):
        return KEEP_ALL
    shed = shedder.decide(stream, keys, level)
    if shed is None:
        return KEEP_ALL
    spans = []
    for p in np.unique(partitions).tolist():
        mine = partitions == p
        count = int(np.count_nonzero(shed & mine))
        if count:
            offs = offsets[mine]
            spans.append(DeferredSpan(int(p), int(offs[0]), int(offs[-1]), count))
    return Admission(
        ~shed, spans, shed_classes(level), _by_class(shedder, stream, keys, shed, shed_classes(level))
    )


def _by_class(
    shedder: LoadShedder,
    stream: str,
    keys: Sequence[bytes | None],
    shed: npt.NDArray[np.bool_],
    classes: frozenset[str],
) -> dict[str, int]:
    """Shed messages per class; a per-key lookup (in C, via map) only when two tiers are shed."""
    n = int(np.count_nonzero(shed))
    if stream == REFERENCE_STREAM:
        return {LOW: n}
    tiers = sorted(c for c in classes if c != LOW)
    if len(tiers) == 1:
        return {tiers[0]: n}
    shed_keys = [keys[i] for i in np.flatnonzero(shed).tolist()]
    codes = np.fromiter(map(shedder.tier_of, shed_keys), np.int8, len(shed_keys))
    counts = np.bincount(codes, minlength=4)
    return {TIER_CLASSES[t]: int(counts[t]) for t in (1, 2, 3) if counts[t]}


def needs_keys(shedder: LoadShedder | None, level: Level) -> bool:
    """Whether :func:`admit` could shed anything at ``level`` (so the caller fetches the keys)."""
    return shedder is not None and bool(shed_classes(level))
