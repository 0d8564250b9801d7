"""What every k2 query answers with: the rows, and exactly what they cover.

A quant trusts an answer only when it says where it came from. Every result carries its
``Coverage``: the Iceberg snapshot each table was read at, the Kafka offsets per partition from
which the live part starts (everything before them is in that snapshot), which partitions' live
part could not be read (an ingest process that did not answer: the answer is then history plus
the other buffers, and says so), the degradation level of the ingest processes, and whether the
covered data has deferred (shed, not yet backfilled) ranges or open sequence gaps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

__all__ = ["Coverage", "DeferredRange", "QueryResult"]


@dataclass(frozen=True, slots=True)
class DeferredRange:
    """Offsets ``[first, last]`` of a topic partition shed and not yet backfilled."""

    topic: str
    partition: int
    first: int
    last: int


@dataclass(slots=True)
class Coverage:
    # Table name -> Iceberg snapshot id the history part was read at (None: the table is empty).
    snapshots: dict[str, int | None] = field(default_factory=dict)
    # Table name -> partition -> first Kafka offset taken from the live buffers.
    live_from: dict[str, dict[int, int]] = field(default_factory=dict)
    # "table/partition" whose live part is missing from this answer (endpoint down, breaker open).
    live_missing: list[str] = field(default_factory=list)
    # Live endpoints asked, and those that answered.
    endpoints_asked: int = 0
    endpoints_answered: int = 0
    # Highest degradation level among the ingest processes that answered (None: none answered).
    level: int | None = None
    level_name: str | None = None
    deferred: list[DeferredRange] = field(default_factory=list)
    open_gaps: int = 0
    # Time travel: the snapshot or timestamp asked for, if any (then no live part is read).
    as_of: str | None = None

    @property
    def complete(self) -> bool:
        """True when nothing in range is missing, deferred or gapped."""
        return not self.live_missing and not self.deferred and self.open_gaps == 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["live_from"] = {t: {str(p): o for p, o in ps.items()} for t, ps in self.live_from.items()}
        out["snapshots"] = {t: (str(s) if s is not None else None) for t, s in self.snapshots.items()}
        out["complete"] = self.complete
        return out


@dataclass(slots=True)
class QueryResult:
    rows: pa.Table
    coverage: Coverage
    # More rows matched than the limit allowed; ``next_cursor`` (if any) continues after the last.
    truncated: bool = False
    next_cursor: str | None = None
