"""The arithmetic behind the demo's checks: plain functions of measured values, no I/O."""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from k2.feeds.report import FeedReport

__all__ = [
    "CommitPoint",
    "Mismatch",
    "count_mismatches",
    "pick_time_travel",
    "same_vwap",
    "source_counts",
]

K = TypeVar("K", bound=Hashable)

# VWAP is a sum of products: two engines summing in different orders differ in the last bits.
VWAP_REL = 1e-9


@dataclass(frozen=True)
class Mismatch:
    key: object
    expected: int
    found: int


def source_counts(report: FeedReport) -> dict[tuple[str, str, int], int]:
    """(table, symbol, session) -> messages a feed produced validly, from its report."""
    out: dict[tuple[str, str, int], int] = {}
    for r in report.streams:
        key = (r.table, r.symbol, r.session)
        out[key] = out.get(key, 0) + r.count
    return out


def count_mismatches(expected: Mapping[K, int], found: Mapping[K, int]) -> list[Mismatch]:
    """Every key whose count differs (a key missing on one side counts 0 there), in key order."""
    keys = sorted(set(expected) | set(found), key=repr)
    return [
        Mismatch(k, expected.get(k, 0), found.get(k, 0))
        for k in keys
        if expected.get(k, 0) != found.get(k, 0)
    ]


def same_vwap(a: float | None, b: float | None, rel: float = VWAP_REL) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel)


@dataclass(frozen=True)
class CommitPoint:
    """One snapshot of a table: when it was committed (epoch ms) and the rows it holds."""

    snapshot_id: int
    committed_ms: int
    rows: int


def pick_time_travel(commits: Sequence[CommitPoint]) -> tuple[CommitPoint, CommitPoint, int] | None:
    """Two consecutive commits and a moment strictly between them (epoch ms) to travel back to.

    The earlier commit must hold rows, and fewer than the newest, so the answer as of that moment
    differs from both an empty table and the table now. Of the candidates, the one nearest the
    middle of the history is taken (the story reads best half-way through the week).
    """
    ordered = sorted(commits, key=lambda c: c.committed_ms)
    if not ordered:
        return None
    final = ordered[-1].rows
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(ordered)
        if 0 < a.rows < final and b.committed_ms - a.committed_ms >= 2
    ]
    if not pairs:
        return None
    a, b = min(pairs, key=lambda p: abs(p[0].rows - final / 2))
    return a, b, (a.committed_ms + b.committed_ms) // 2
