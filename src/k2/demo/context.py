"""What every section is handed, and what one section leaves for the next."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from k2.config import Settings
from k2.demo.checks import CheckRecorder
from k2.demo.compare import CommitPoint
from k2.demo.services import ApiServer, Kafka
from k2.demo.world import DemoOptions
from k2.feeds.asx import AsxData
from k2.feeds.report import FeedReport

__all__ = ["DemoContext"]


@dataclass
class DemoContext:
    settings: Settings
    options: DemoOptions
    console: Console
    checks: CheckRecorder
    # Closed (in reverse order) when the story ends, whatever happened: broker, API, ingest.
    resources: ExitStack
    kafka: Kafka | None = None
    api: ApiServer | None = None
    # Section 2: the source as read from the files, what the replay produced, the trades commits.
    source: AsxData | None = None
    replay: FeedReport | None = None
    trade_commits: list[CommitPoint] = field(default_factory=list)
    ingest_rates: dict[str, float] = field(default_factory=dict)  # section 8 will price these
    # Section 3: the tick produced live (its trade_id), so later answers can point at it.
    live_trade_id: str | None = None
    outputs: list[Path] = field(default_factory=list)  # charts and files written, for the summary

    @property
    def landed(self) -> bool:
        """Section 2 put the ASX week in Iceberg (later sections build on it)."""
        return bool(self.trade_commits)
