"""Load control: feeds the DegradationManager with measured signals and says what the level means.

The manager (``k2.degradation``) is pure; this is its I/O edge in an ingest process. Once per
processed batch (and on idle ticks) the loop passes the lag it computed from the fetch thread's
high watermarks; this reads the process's RSS (at most every ``_RSS_EVERY_S``, since psutil costs
tens of microseconds), divides it by the memory budget, and logs each transition as one line.

What each level does, in one place (README and docs/degradation.md have the table):

=============  ===========================================================================
NORMAL         everything
SOFT           commits twice as large and twice as far apart (fewer, larger commits), unless
               memory is under pressure: then commits stay normal-sized and come early
GRACEFUL       reference data (LOW) is shed: deferred, backfilled later
AGGRESSIVE     tier-3 symbols are shed too; a backlog deeper than the AGGRESSIVE lag bound
               is deferred whole (the consumer jumps to the head, see ``defer_backlog``)
CIRCUIT_BREAK  only tier-1 symbols are processed; above the CIRCUIT_BREAK memory bound
               consumption pauses until memory falls below it x the recovery factor
=============  ===========================================================================

Memory pressure (memory at or above the SOFT bound) also asks the committer for an early commit
before anything is shed: the live buffer is most of what an ingest process can give back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil
import pyarrow as pa

from k2.config import DegradationSettings, Settings
from k2.degradation import DegradationManager, DegradationStatus, Level, Signals, Transition
from k2.logs import get_logger
from k2.shedding import LoadShedder, load_tiers

__all__ = ["LoadControl", "open_shedder"]

_RSS_EVERY_S = 0.25


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


class LoadControl:
    def __init__(
        self,
        settings: DegradationSettings,
        budget_bytes: int,
        writer: str,
        rss: Callable[[], int] = _rss,
    ) -> None:
        self._settings = settings
        self._manager = DegradationManager(settings)
        self._budget = max(1, budget_bytes)
        self._rss = rss
        self._rss_at = float("-inf")
        self._memory = 0.0
        self._log = get_logger("degradation", writer=writer)

    @property
    def level(self) -> Level:
        return self._manager.level

    @property
    def memory(self) -> float:
        """RSS / budget as last measured."""
        return self._memory

    @property
    def budget_bytes(self) -> int:
        return self._budget

    def status(self) -> DegradationStatus:
        return self._manager.status()

    def observe(self, lag: int, buffer_bytes: int, now: float) -> Transition | None:
        if now - self._rss_at >= _RSS_EVERY_S:
            self._rss_at = now
            self._memory = self._rss() / self._budget
        signals = Signals(lag, self._memory, pa.total_allocated_bytes(), buffer_bytes)
        t = self._manager.update(signals, now)
        if t is not None:
            self._log.warning(
                "level_changed",
                previous=t.previous.name,
                level=t.level.name,
                reason=t.reason,
                lag=t.lag,
                memory=round(t.memory, 3),
                arrow_bytes=signals.arrow_bytes,
                buffer_bytes=buffer_bytes,
            )
        return t

    def memory_pressure(self) -> bool:
        """Memory at or above the SOFT bound: commit early, before anything is shed."""
        return self._settings.enabled and self._memory >= self._settings.memory_thresholds[0]

    def must_pause(self, paused: bool) -> bool:
        """Whether consumption should be paused for memory (hysteresis: resume below recovery)."""
        if not self._settings.enabled:
            return False
        hard = self._settings.memory_thresholds[3]
        if paused:
            return self._memory >= hard * self._settings.memory_recovery_factor
        return self._memory >= hard

    def commit_scale(self) -> int:
        """How much larger and rarer commits are now: twice from SOFT up, unless memory is under
        pressure (larger commits would hold more rows in memory; then commits come early instead)."""
        return 2 if self.level >= Level.SOFT and not self.memory_pressure() else 1

    def defers_backlog(self, lag: int) -> bool:
        """A backlog deep enough to defer whole: at AGGRESSIVE or above, lag past its bound."""
        s = self._settings
        return s.enabled and s.defer_backlog and self.level >= Level.AGGRESSIVE and lag >= s.lag_thresholds[2]

    def may_backfill(self, lag: int) -> bool:
        """Backfill runs at SOFT or better while live lag is below SOFT's recovery bound."""
        s = self._settings
        return self.level <= Level.SOFT and lag < s.lag_thresholds[0] * s.lag_recovery_factor


def open_shedder(settings: Settings, log: Any) -> LoadShedder | None:
    """The load shedder of the configured tiers; None when shedding or degradation is off.

    Tier files that do not exist (k2 run outside its checkout with the default path) leave
    every symbol tier 3, with a warning: shedding still works, by stream and tier 3 alone.

    Raises:
        ConfigError: a tier file exists but is malformed.
    """
    if not (settings.shedding.enabled and settings.degradation.enabled):
        return None
    paths = [p for p in settings.shedding.tier_files if p.exists()]
    missing = [str(p) for p in settings.shedding.tier_files if not p.exists()]
    if missing:
        log.warning("tier_files_missing", paths=missing, effect="their symbols are tier 3")
    return LoadShedder(load_tiers(paths))
