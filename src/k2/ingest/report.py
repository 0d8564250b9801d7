"""What one ingest run did, as counts: the ``--report`` file, the benchmark's input, the log's last line.

Reports of several processes (``k2 ingest --processes N``) merge into one: counts add up, and
the time span covers them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["IngestReport"]


@dataclass(slots=True)
class IngestReport:
    consumed: int = 0
    landed: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    unplaceable: int = 0
    shed: int = 0  # deferred by load shedding or a backlog jump (backfilled later, never lost)
    backfilled: int = 0  # rows landed by the backfill of deferred ranges
    deferred_lost: int = 0  # deferred messages Kafka's retention deleted before the backfill
    max_level: int = 0  # highest degradation level reached (k2.degradation.Level)
    level_changes: int = 0
    memory_pauses: int = 0  # consumption paused because memory passed the CIRCUIT_BREAK bound
    shed_by_class: dict[str, int] = field(default_factory=dict)  # low, tier1, tier2, tier3
    backfilled_by_class: dict[str, int] = field(default_factory=dict)
    # (wall clock s, level) at each transition, for timelines; bounded like the manager's history.
    level_timeline: list[tuple[float, int]] = field(default_factory=list)
    # Sampled freshness of live messages: (wall clock s, class, seconds from Kafka create time
    # to the row in the live buffer); at most ``ingest.freshness_samples``, the newest kept.
    freshness: list[tuple[float, str, float]] = field(default_factory=list)
    commits: int = 0
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    exit_reason: str = ""
    first_consumed_at: float | None = None  # wall clock (epoch s) of the first non-empty batch
    last_committed_at: float | None = None  # wall clock of the last commit that landed rows

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__slots__}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> IngestReport:
        return cls(**json.loads(text))

    @classmethod
    def merge(cls, reports: list[IngestReport]) -> IngestReport:
        """One report for several processes: counts add up, the time span covers them all.

        ``peak_rss_bytes`` is the sum of the processes' peaks (an upper bound of the footprint).
        """
        out = cls()
        for r in reports:
            out.consumed += r.consumed
            out.duplicates += r.duplicates
            out.unplaceable += r.unplaceable
            out.shed += r.shed
            out.backfilled += r.backfilled
            out.deferred_lost += r.deferred_lost
            out.max_level = max(out.max_level, r.max_level)
            out.level_changes += r.level_changes
            out.memory_pauses += r.memory_pauses
            for c, n in r.shed_by_class.items():
                out.shed_by_class[c] = out.shed_by_class.get(c, 0) + n
            for c, n in r.backfilled_by_class.items():
                out.backfilled_by_class[c] = out.backfilled_by_class.get(c, 0) + n
            out.level_timeline += [tuple(x) for x in r.level_timeline]  # type: ignore[misc]
            out.freshness += [tuple(x) for x in r.freshness]  # type: ignore[misc]
            out.commits += r.commits
            out.peak_rss_bytes += r.peak_rss_bytes
            out.seconds = max(out.seconds, r.seconds)
            for table, n in r.landed.items():
                out.landed[table] = out.landed.get(table, 0) + n
            for topic, n in r.rejected.items():
                out.rejected[topic] = out.rejected.get(topic, 0) + n
        firsts = [r.first_consumed_at for r in reports if r.first_consumed_at is not None]
        lasts = [r.last_committed_at for r in reports if r.last_committed_at is not None]
        out.first_consumed_at = min(firsts) if firsts else None
        out.last_committed_at = max(lasts) if lasts else None
        out.exit_reason = ",".join(sorted({r.exit_reason for r in reports}))
        return out

    def as_dict(self) -> dict[str, object]:
        return dict(json.loads(self.to_json()))
