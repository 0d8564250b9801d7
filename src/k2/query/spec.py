"""What can be asked: the typed queries k2 answers, shared by the engine, the API and the CLI.

``Queries`` is the role the API is written against (the engine plays it; API tests use a fake).
Times are UTC ``datetime``s; a trading ``day`` is the exchange's own date (``session``), so
"BHP on 2014-03-11" means the ASX session of that date, whatever UTC days it spans.
Bar intervals are named so they cannot be misread (NautilusTrader's ``1-MINUTE-LAST``: step,
unit, and the price they aggregate, here the last trade price).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from k2.errors import QueryRejected
from k2.query.result import QueryResult

__all__ = ["AsOf", "BarInterval", "Queries", "TimeRange"]


class BarInterval(StrEnum):
    SECOND_1 = "1-SECOND-LAST"
    MINUTE_1 = "1-MINUTE-LAST"
    MINUTE_5 = "5-MINUTE-LAST"
    HOUR_1 = "1-HOUR-LAST"
    DAY_1 = "1-DAY-LAST"

    @property
    def seconds(self) -> int:
        """Bucket width; ``1-DAY-LAST`` buckets by trading day (session), not by 86,400 s of UTC."""
        return {"1-SECOND-LAST": 1, "1-MINUTE-LAST": 60, "5-MINUTE-LAST": 300, "1-HOUR-LAST": 3600}.get(
            self.value, 86_400
        )


_SNAPSHOT_ID = re.compile(r"^-?\d{6,}$")


@dataclass(frozen=True, slots=True)
class AsOf:
    """Time travel: read history as of one snapshot id, or the snapshot current at a UTC time.

    A time-travel read has no live part: the buffers only hold the present.
    """

    snapshot_id: int | None = None
    at: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> AsOf:
        """``as_of=`` is a snapshot id (digits) or an ISO-8601 time with an offset (or ``Z``)."""
        text = text.strip()
        if _SNAPSHOT_ID.match(text):
            return cls(snapshot_id=int(text))
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            detail = f"as_of must be a snapshot id or ISO time, got {text!r}"
            raise QueryRejected("bad_parameter", detail) from None
        if at.tzinfo is None:
            raise QueryRejected("bad_parameter", "as_of time needs an offset, e.g. 2014-03-11T03:00:00Z")
        return cls(at=at)

    def __str__(self) -> str:
        return str(self.snapshot_id) if self.snapshot_id is not None else self.at.isoformat()  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Which rows by time: a UTC ``[start, end)``, and/or one exchange-local trading ``day``."""

    start: datetime | None = None
    end: datetime | None = None
    day: date | None = None

    def __post_init__(self) -> None:
        for t in (self.start, self.end):
            if t is not None and t.tzinfo is None:
                raise QueryRejected("bad_parameter", "times need an offset, e.g. 2014-03-11T03:00:00Z")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise QueryRejected("bad_parameter", "end must be after start")


class Queries(Protocol):
    """The questions the API forwards. Every method raises ``QueryRejected`` for a request it will
    not run (unknown symbol format, bad range) and ``QueryTimeout`` past the time limit."""

    def trades(
        self,
        *,
        symbol: str | None,
        exchange: str | None,
        when: TimeRange,
        last: int | None,
        limit: int,
        cursor: str | None,
        as_of: AsOf | None,
    ) -> QueryResult:
        """Trades in time order; ``last=N``: the newest N (still returned oldest first)."""
        ...

    def quotes(
        self,
        *,
        symbol: str | None,
        exchange: str | None,
        when: TimeRange,
        last: int | None,
        limit: int,
        cursor: str | None,
        as_of: AsOf | None,
    ) -> QueryResult: ...

    def bars(
        self,
        *,
        symbol: str,
        exchange: str | None,
        interval: BarInterval,
        when: TimeRange,
        limit: int,
        as_of: AsOf | None,
    ) -> QueryResult:
        """OHLCV bars of trades: ``bar_start`` (UTC), ``trading_day``, open/high/low/close, volume,
        vwap, trades."""
        ...

    def vwap(
        self, *, symbols: list[str] | None, exchange: str | None, when: TimeRange, as_of: AsOf | None
    ) -> QueryResult:
        """Volume-weighted average price per symbol (and trading day) over the range."""
        ...

    def snapshot(self, *, symbols: list[str] | None, exchange: str | None) -> QueryResult:
        """Per symbol: the last trade and the last quote (best bid/ask), history ∪ live."""
        ...

    def gaps(
        self, *, symbol: str | None, exchange: str | None, status: str | None, limit: int
    ) -> QueryResult:
        """Rows of ``sequence_gaps``."""
        ...

    def sql(self, text: str, *, max_rows: int) -> QueryResult:
        """One read-only SELECT over the views ``trades``, ``quotes``, ``reference_data`` and
        ``sequence_gaps`` (each history ∪ live), in the sandbox."""
        ...

    def status(self) -> dict[str, Any]:
        """Ingest processes, their levels, lag and pending backfill; tables and snapshots."""
        ...

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether the API can answer (catalog reachable), with the facts that decided it."""
        ...
