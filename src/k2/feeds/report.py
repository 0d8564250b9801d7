"""What a feed run put on Kafka, accounted exactly.

A ``FeedReport`` is the ground truth a test (or an operator) compares ingest against. Its
invariants:

* ``streams`` lists every ``(table, exchange, symbol, session)`` the feed produced valid messages
  for, with the lowest and highest ``seq`` it produced. Every seq in that range was produced
  validly, exactly once as an original, except the seqs named in ``gaps``, which were never
  produced in any form. So the *valid unique set* is
  ``{(t, e, s, d, q) for each stream, q in first_seq..last_seq} - gap seqs``
  (see :meth:`FeedReport.valid_keys`), and ``counts`` / ``symbols`` are its sizes.
* ``duplicates`` has one entry per extra byte-identical copy of an already-produced valid message.
* ``reorders`` lists pairs of one stream where ``second_seq`` (= ``first_seq + 1``) was produced
  before ``first_seq``.
* ``poison`` has one entry per extra message that ingest must reject; poison never occupies a seq.
* ``produced_total`` = valid + duplicates + poison = ``sum(produced.values())``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = [
    "Duplicate",
    "FeedProgress",
    "FeedReport",
    "Gap",
    "Poison",
    "Reorder",
    "StreamRange",
    "utc_iso",
]

MessageKey = tuple[str, str, str, int, int]
"""(table, exchange, symbol, session, seq): a market message's identity within its table."""


class StreamRange(msgspec.Struct, kw_only=True, frozen=True):
    """Seqs ``first_seq..last_seq`` of one stream were produced (minus any gaps inside)."""

    table: str
    exchange: str
    symbol: str
    session: int
    first_seq: int
    last_seq: int
    count: int  # valid unique messages: the range minus its gaps


class Gap(msgspec.Struct, kw_only=True, frozen=True):
    """Seqs ``first_seq..last_seq`` (inclusive) of one stream were never produced."""

    table: str
    exchange: str
    symbol: str
    session: int
    first_seq: int
    last_seq: int


class Duplicate(msgspec.Struct, kw_only=True, frozen=True):
    """One extra byte-identical copy of the valid message ``seq``, produced after the original."""

    table: str
    exchange: str
    symbol: str
    session: int
    seq: int


class Reorder(msgspec.Struct, kw_only=True, frozen=True):
    """Within its stream, ``second_seq`` (= ``first_seq + 1``) was produced before ``first_seq``."""

    table: str
    exchange: str
    symbol: str
    session: int
    first_seq: int
    second_seq: int


class Poison(msgspec.Struct, kw_only=True, frozen=True):
    """An extra message that ingest must reject; ``kind`` names the rule it breaks."""

    topic: str
    table: str
    kind: str
    bytes_len: int


def utc_iso(epoch_s: float) -> str:
    """ISO 8601 UTC timestamp with milliseconds, e.g. ``2014-03-09T20:57:14.754Z``."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FeedReport(msgspec.Struct, kw_only=True):
    feed: str  # "asx" or "simulator"
    exchange: str
    started_at: str = ""  # ISO 8601 UTC, first message handed to the producer
    ended_at: str = ""  # ISO 8601 UTC, producer flushed
    elapsed_s: float = 0.0
    messages_per_second: float = 0.0
    # CPU seconds the feed process spent from the first send to the flush (all its threads).
    cpu_s: float = 0.0
    produced_total: int = 0
    # Everything produced per table role (valid + duplicates + poison); what each topic holds.
    produced: dict[str, int] = {}
    # The valid unique set's size per table, and per table per symbol.
    counts: dict[str, int] = {}
    symbols: dict[str, dict[str, int]] = {}
    streams: list[StreamRange] = []
    gaps: list[Gap] = []
    duplicates: list[Duplicate] = []
    reorders: list[Reorder] = []
    poison: list[Poison] = []
    poison_by_kind: dict[str, int] = {}
    # The run's parameters (simulator config, replay speed, ...), for the record.
    params: dict[str, Any] = {}

    # -- the ground truth -------------------------------------------------------------------

    def valid_keys(self) -> set[MessageKey]:
        """The valid unique set: every ``(table, exchange, symbol, session, seq)`` produced validly."""
        keys: set[MessageKey] = set()
        for r in self.streams:
            keys.update(
                (r.table, r.exchange, r.symbol, r.session, q) for q in range(r.first_seq, r.last_seq + 1)
            )
        keys.difference_update(self.gap_keys())
        return keys

    def gap_keys(self) -> Iterator[MessageKey]:
        for g in self.gaps:
            for q in range(g.first_seq, g.last_seq + 1):
                yield (g.table, g.exchange, g.symbol, g.session, q)

    def valid_total(self) -> int:
        return sum(self.counts.values())

    # -- serialisation ----------------------------------------------------------------------

    def to_json(self, *, indent: int = 2) -> bytes:
        raw = msgspec.json.encode(self)
        return msgspec.json.format(raw, indent=indent) if indent else raw

    @classmethod
    def from_json(cls, data: bytes | str) -> FeedReport:
        return msgspec.json.decode(data, type=cls)

    def write(self, path: Path | str) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.to_json() + b"\n")
        return p

    # -- rendering --------------------------------------------------------------------------

    def rich_table(self) -> Table:
        """Per-table summary: valid unique, produced, and injected faults."""
        t = Table(title=f"{self.feed} feed ({self.exchange})", title_justify="left")
        t.add_column("table")
        for col in ("valid", "produced", "gaps (seqs)", "duplicates", "reorders", "poison"):
            t.add_column(col, justify="right")
        known = ("trades", "quotes", "reference")
        tables = [t for t in known if t in self.counts or t in self.produced]
        tables += sorted((set(self.counts) | set(self.produced)) - set(known))
        for name in tables:
            gap_seqs = sum(g.last_seq - g.first_seq + 1 for g in self.gaps if g.table == name)
            n_gaps = sum(1 for g in self.gaps if g.table == name)
            t.add_row(
                name,
                f"{self.counts.get(name, 0):,}",
                f"{self.produced.get(name, 0):,}",
                f"{n_gaps:,} ({gap_seqs:,})",
                f"{sum(1 for d in self.duplicates if d.table == name):,}",
                f"{sum(1 for r in self.reorders if r.table == name):,}",
                f"{sum(1 for p in self.poison if p.table == name):,}",
            )
        t.add_section()
        t.add_row(
            "total",
            f"{self.valid_total():,}",
            f"{self.produced_total:,}",
            f"{len(self.gaps):,}",
            f"{len(self.duplicates):,}",
            f"{len(self.reorders):,}",
            f"{len(self.poison):,}",
        )
        t.caption = (
            f"{self.elapsed_s:.2f} s, {self.messages_per_second:,.0f} msg/s, "
            f"{self.started_at} .. {self.ended_at}"
        )
        return t

    def __rich__(self) -> Group:
        parts: list[Table] = [self.rich_table()]
        if self.poison_by_kind:
            k = Table(title="poison by kind", title_justify="left")
            k.add_column("kind")
            k.add_column("count", justify="right")
            for kind, n in sorted(self.poison_by_kind.items()):
                k.add_row(kind, f"{n:,}")
            parts.append(k)
        return Group(*parts)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "", style="progress.data.speed")


class FeedProgress:
    """A rich progress bar for a feed run; callers advance it per batch, never per message."""

    def __init__(self, label: str, total: int | None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task(label, total=total)
        self._progress.start()

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def stop(self) -> None:
        self._progress.stop()
