"""``k2 status``: what every ingest process and the deferred ledgers say, for an operator.

Two sources, joined here and nowhere else:

* the status files ingest processes rewrite about every second (``k2.ingest.status``): level,
  lag, memory, buffer, pause, and the backfill pending in the partitions each one owns;
* the deferred ledger in each market table's newest k2 snapshot (``k2.deferred_ledger``): the
  shed messages still to be backfilled, visible even when no process runs.

A process is **alive** when its pid exists and its file was rewritten within ``fresh_s``
(5 s: five missed writes). Otherwise it is ``stalled`` (pid there, file not rewritten: a hung or
stopped process) or ``exited`` (no such pid; the file is what it said last). The functions here
take the statuses, ledgers, the wall clock and a pid check as arguments, so they read nothing
themselves; :func:`pid_exists` and :func:`read_ledgers` are the I/O the CLI passes in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from k2.deferred_ledger import DeferredLedger
from k2.ingest.status import IngestStatus
from k2.lake import TABLE_FOR_STREAM, read_offsets

__all__ = [
    "FRESH_S",
    "LedgerPartition",
    "LedgerSummary",
    "ProcessRow",
    "StatusReport",
    "build_report",
    "pid_exists",
    "read_ledgers",
]

FRESH_S = 5.0

State = Literal["alive", "stalled", "exited"]


@dataclass(frozen=True, slots=True)
class ProcessRow:
    writer: str
    pid: int
    state: State
    updated_age_s: float
    level: str
    lag: int
    memory: float  # RSS / budget
    memory_budget_bytes: int
    buffer_rows: int
    buffer_bytes: int
    paused: bool
    pending_backfill: int
    oldest_pending_since: float | None
    oldest_pending_age_s: float | None
    shed: int
    backfilled: int
    deferred_lost: int
    partitions: list[str]

    @property
    def alive(self) -> bool:
        return self.state == "alive"


@dataclass(frozen=True, slots=True)
class LedgerPartition:
    topic: str
    partition: int
    ranges: int
    messages: int
    first_offset: int
    last_offset: int
    classes: list[str]
    oldest_pending_since: float
    oldest_pending_age_s: float


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """One table's pending backfill, as its newest k2 snapshot records it."""

    table: str
    messages: int
    oldest_pending_since: float | None
    oldest_pending_age_s: float | None
    partitions: list[LedgerPartition]

    @property
    def ranges(self) -> int:
        return sum(p.ranges for p in self.partitions)

    @property
    def classes(self) -> list[str]:
        return sorted({c for p in self.partitions for c in p.classes})


@dataclass(frozen=True, slots=True)
class StatusReport:
    now: float
    fresh_s: float
    processes: list[ProcessRow]
    ledgers: list[LedgerSummary]
    lake_error: str | None = None  # why the ledgers could not be read, if they could not

    @property
    def alive(self) -> int:
        return sum(p.alive for p in self.processes)

    def to_dict(self) -> dict[str, Any]:
        """The ``k2 status --json`` document."""
        return {
            "now": self.now,
            "fresh_s": self.fresh_s,
            "alive": self.alive,
            "processes": [{**asdict(p), "alive": p.alive} for p in self.processes],
            "deferred": {
                s.table: {
                    "messages": s.messages,
                    "ranges": s.ranges,
                    "classes": s.classes,
                    "oldest_pending_since": s.oldest_pending_since,
                    "oldest_pending_age_s": s.oldest_pending_age_s,
                    "partitions": [asdict(p) for p in s.partitions],
                }
                for s in self.ledgers
            },
            "lake_error": self.lake_error,
        }

    def rich(self) -> Group:
        """Processes, then pending backfill per table; compact enough for a 120-column terminal."""
        return Group(self._process_table(), Text(""), self._ledger_table())

    def _process_table(self) -> Table | Text:
        if not self.processes:
            return Text("ingest processes: none (no status files)", style="bold")
        # Two lines a row keep nine facts per process within about 100 columns.
        t = Table(title=f"ingest processes ({self.alive} alive)", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("writer\npid", "state\n(updated)", "level\nlag"):
            t.add_column(col)
        t.add_column("memory\nbuffer", justify="right", no_wrap=True)
        for col in ("pending backfill\n(oldest)", "shed\nbackfilled, lost"):
            t.add_column(col, justify="right")
        for p in self.processes:
            lost = f"[red]{p.deferred_lost:,} lost[/]" if p.deferred_lost else "0 lost"
            t.add_row(
                f"{p.writer}\n{p.pid}",
                f"{_STATE_STYLE[p.state]}\n({_age(p.updated_age_s)})"
                + (" [yellow]paused[/]" if p.paused else ""),
                f"{_level(p.level)}\n{p.lag:,}",
                f"{p.memory:.0%} of {_bytes(p.memory_budget_bytes)}\n"
                f"{p.buffer_rows:,} rows, {_bytes(p.buffer_bytes)}",
                f"{p.pending_backfill:,}\n"
                + (f"({_age(p.oldest_pending_age_s)})" if p.oldest_pending_age_s is not None else ""),
                f"{p.shed:,}\n{p.backfilled:,}, {lost}",
            )
        return t

    def _ledger_table(self) -> Table | Text:
        if self.lake_error is not None:
            return Text(f"pending backfill in Iceberg: unreadable ({self.lake_error})", style="bold red")
        t = Table(
            title="pending backfill in Iceberg (deferred ledger)", title_justify="left", box=box.SIMPLE_HEAD
        )
        t.add_column("table", no_wrap=True)
        for col in ("messages", "oldest", "partitions", "ranges"):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("classes")
        for s in self.ledgers:
            t.add_row(
                s.table,
                f"{s.messages:,}",
                _age(s.oldest_pending_age_s) if s.oldest_pending_age_s is not None else "-",
                f"{len(s.partitions):,}",
                f"{s.ranges:,}",
                ", ".join(s.classes) or "-",
            )
        return t


def build_report(
    statuses: Iterable[IngestStatus],
    ledgers: Mapping[str, DeferredLedger],
    *,
    now: float,
    pid_alive: Callable[[int], bool],
    fresh_s: float = FRESH_S,
    lake_error: str | None = None,
) -> StatusReport:
    """Join process statuses and per-table ledgers at wall-clock ``now`` (epoch seconds).

    Processes are listed alive first, then by writer; tables in the order of ``ledgers``.
    """
    rows = [_process_row(s, now, pid_alive, fresh_s) for s in statuses]
    rows.sort(key=lambda r: (not r.alive, r.writer))
    summaries = [_ledger_summary(table, ledger, now) for table, ledger in ledgers.items()]
    return StatusReport(now, fresh_s, rows, summaries, lake_error)


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (status files are per host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def read_ledgers(catalog: Catalog, namespace: str) -> dict[str, DeferredLedger]:
    """Each existing market table's pending deferred ledger, from its newest k2 snapshot.

    Raises:
        OffsetsMissing: a table has rows but no k2 snapshot (``k2.lake.read_offsets``).
        ValueError: a ledger this version of k2 cannot read.
    """
    out: dict[str, DeferredLedger] = {}
    for name in TABLE_FOR_STREAM.values():
        try:
            table = catalog.load_table((namespace, name))
        except NoSuchTableError:  # nothing ingested into it yet
            continue
        out[name] = read_offsets(table).deferred
    return out


def _process_row(s: IngestStatus, now: float, pid_alive: Callable[[int], bool], fresh_s: float) -> ProcessRow:
    age = max(now - s.updated_at, 0.0)
    state: State = ("alive" if age <= fresh_s else "stalled") if pid_alive(s.pid) else "exited"
    oldest = s.oldest_pending_since
    return ProcessRow(
        writer=s.writer,
        pid=s.pid,
        state=state,
        updated_age_s=round(age, 3),
        level=s.level_name,
        lag=s.lag,
        memory=s.memory,
        memory_budget_bytes=s.memory_budget_bytes,
        buffer_rows=s.buffer_rows,
        buffer_bytes=s.buffer_bytes,
        paused=s.paused,
        pending_backfill=s.pending_backfill,
        oldest_pending_since=oldest,
        oldest_pending_age_s=None if oldest is None else round(max(now - oldest, 0.0), 3),
        shed=s.shed,
        backfilled=s.backfilled,
        deferred_lost=s.deferred_lost,
        partitions=list(s.partitions),
    )


def _ledger_summary(table: str, ledger: DeferredLedger, now: float) -> LedgerSummary:
    parts: list[LedgerPartition] = []
    for topic, partition in ledger.partitions():
        ranges = ledger.ranges(topic, partition)
        since = min(r.since for r in ranges)
        parts.append(
            LedgerPartition(
                topic=topic,
                partition=partition,
                ranges=len(ranges),
                messages=sum(r.count for r in ranges),
                first_offset=ranges[0].first,
                last_offset=ranges[-1].last,
                classes=sorted(set().union(*(r.classes for r in ranges))),
                oldest_pending_since=since,
                oldest_pending_age_s=round(max(now - since, 0.0), 3),
            )
        )
    messages, oldest = ledger.pending()
    age = None if oldest is None else round(max(now - oldest, 0.0), 3)
    return LedgerSummary(table, messages, oldest, age, parts)


# -- formatting ---------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{m:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" and value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_STATE_STYLE: dict[State, str] = {
    "alive": "[green]alive[/]",
    "stalled": "[yellow]stalled[/]",
    "exited": "[red]exited[/]",
}


def _level(name: str) -> str:
    colour = {"NORMAL": "green", "SOFT": "cyan", "GRACEFUL": "yellow"}.get(name, "red")
    return f"[{colour}]{name}[/]"
