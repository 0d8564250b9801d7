"""Degradation: how far behind ingest is, as one level that the load shedder acts on.

Two signals drive it: **lag** (messages between the high watermarks and the positions of the
partitions a process owns) and **memory** (the process's RSS as a fraction of its budget). Each
level from SOFT to CIRCUIT_BREAK has an entry bound per signal; the level the signals *demand*
is the higher of the two levels they reach.

Invariants, whatever the input:

* **Escalation is immediate** and may jump several levels: the level is never below the level
  the latest signals demand, because shedding late is how memory runs out.
* **Recovery is slow and one step at a time**: from level L the manager steps down to L-1 only
  after both signals stayed below L's entry bound times the recovery factor (lag 0.5, memory 0.9)
  for ``cooldown_s``. That cooldown restarts at every transition and whenever a signal goes back
  above its recovery bound, so a load oscillating around a bound costs one transition, not one
  per swing. Stepping down never undershoots: the recovery bound of L is below L's entry bound,
  so after the step the signals demand L-1 at most.
* **No clock is read here**: the caller passes a monotonic ``now`` with every update.

:func:`memory_budget` is the one function here that does I/O (cgroup files, psutil); it runs
once at start-up, outside the manager.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import psutil

from k2.config import DegradationSettings

__all__ = [
    "DegradationManager",
    "DegradationStatus",
    "Level",
    "Signals",
    "Transition",
    "memory_budget",
]


class Level(IntEnum):
    """Degradation levels, ordered: a higher level sheds more (see ``k2.shedding``)."""

    NORMAL = 0
    SOFT = 1
    GRACEFUL = 2
    AGGRESSIVE = 3
    CIRCUIT_BREAK = 4


@dataclass(frozen=True, slots=True)
class Signals:
    """One observation of load. ``arrow_bytes`` and ``buffer_bytes`` are reported, not acted on."""

    lag: int
    memory: float
    arrow_bytes: int = 0
    buffer_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """A level change, with the signal values that caused it (one structured log line each)."""

    at: float
    previous: Level
    level: Level
    reason: str
    lag: int
    memory: float


@dataclass(frozen=True, slots=True)
class DegradationStatus:
    """What a status endpoint shows: the level, since when, and the signals it was last fed.

    ``calm_since`` is when the signals last went below the current level's recovery bounds (the
    cooldown runs from there); None when they are not below them, or at NORMAL.
    """

    enabled: bool
    level: Level
    since: float | None
    signals: Signals | None
    calm_since: float | None


class DegradationManager:
    """Turns a stream of :class:`Signals` into a :class:`Level`, with hysteresis and a cooldown."""

    def __init__(self, settings: DegradationSettings, history: int = 256) -> None:
        self._settings = settings
        self._lag_entry = list(settings.lag_thresholds)
        self._memory_entry = list(settings.memory_thresholds)
        self._level = Level.NORMAL
        self._since: float | None = None
        self._calm_since: float | None = None
        self._signals: Signals | None = None
        self._history: deque[Transition] = deque(maxlen=history)

    @property
    def level(self) -> Level:
        return self._level

    @property
    def history(self) -> list[Transition]:
        """The most recent transitions, oldest first (bounded by ``history``)."""
        return list(self._history)

    def status(self) -> DegradationStatus:
        return DegradationStatus(
            enabled=self._settings.enabled,
            level=self._level,
            since=self._since,
            signals=self._signals,
            calm_since=self._calm_since,
        )

    def demanded(self, signals: Signals) -> Level:
        """The level these signals call for on their own: the higher of lag's and memory's."""
        return max(self._by_lag(signals.lag), self._by_memory(signals.memory))

    def recovery_bounds(self, level: Level) -> tuple[float, float]:
        """(lag, memory) both signals must stay below for ``cooldown_s`` to leave ``level``."""
        if level == Level.NORMAL:
            return (0.0, 0.0)
        s = self._settings
        return (
            self._lag_entry[level - 1] * s.lag_recovery_factor,
            self._memory_entry[level - 1] * s.memory_recovery_factor,
        )

    def update(self, signals: Signals, now: float) -> Transition | None:
        """Feed one observation taken at ``now`` (monotonic seconds, never decreasing).

        Returns the transition it caused, if any; it is also kept in :attr:`history`.
        """
        self._signals = signals
        if self._since is None:
            self._since = now
        if not self._settings.enabled:
            return None
        target = self.demanded(signals)
        if target > self._level:
            return self._move(target, now, signals, self._escalation_reason(signals, target))
        if self._level == Level.NORMAL:
            return None
        if not self._calm(signals, self._level):
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since < self._settings.cooldown_s:
            return None
        lag_bound, memory_bound = self.recovery_bounds(self._level)
        reason = (
            f"recovered: lag {signals.lag} < {lag_bound:.0f} and memory {signals.memory:.2f} < "
            f"{memory_bound:g} for {self._settings.cooldown_s:g}s"
        )
        return self._move(Level(self._level - 1), now, signals, reason)

    # -- internals ------------------------------------------------------------------------------

    def _by_lag(self, lag: int) -> Level:
        return Level(bisect.bisect_right(self._lag_entry, lag))

    def _by_memory(self, memory: float) -> Level:
        return Level(bisect.bisect_right(self._memory_entry, memory))

    def _calm(self, signals: Signals, level: Level) -> bool:
        lag_bound, memory_bound = self.recovery_bounds(level)
        return signals.lag < lag_bound and signals.memory < memory_bound

    def _escalation_reason(self, signals: Signals, target: Level) -> str:
        parts = []
        if self._by_lag(signals.lag) == target:
            parts.append(f"lag {signals.lag} >= {self._lag_entry[target - 1]}")
        if self._by_memory(signals.memory) == target:
            parts.append(f"memory {signals.memory:.2f} >= {self._memory_entry[target - 1]:.2f}")
        return "; ".join(parts)

    def _move(self, level: Level, now: float, signals: Signals, reason: str) -> Transition:
        transition = Transition(
            at=now,
            previous=self._level,
            level=level,
            reason=reason,
            lag=signals.lag,
            memory=signals.memory,
        )
        self._level = level
        self._since = now
        # The cooldown restarts here: the next step down needs cooldown_s of calm at the new level.
        self._calm_since = now if level > Level.NORMAL and self._calm(signals, level) else None
        self._history.append(transition)
        return transition


# -- the memory budget (I/O, read once at start-up) ----------------------------------------------

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def memory_budget(
    settings_value: int, *, cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP
) -> int:
    """Bytes of memory this process may use: ``settings_value`` if set (> 0), else auto.

    Auto is the tightest cgroup memory limit that applies to this process (cgroup v2
    ``memory.max``, v1 ``memory.limit_in_bytes``, on its own cgroup and each ancestor), capped by
    the machine's memory (``psutil.virtual_memory().total``). "No limit" reads as ``max`` (v2) or
    as a number near 2**63 (v1); both fall back to the machine's memory.
    """
    if settings_value > 0:
        return settings_value
    total = int(psutil.virtual_memory().total)
    limits = [_read_limit(path) for path in _limit_files(cgroup_root, proc_cgroup)]
    return min([total, *(limit for limit in limits if limit is not None and limit > 0)])


def _limit_files(root: Path, proc_cgroup: Path) -> list[Path]:
    """Limit files that may bound this process: its own cgroup and ancestors, then the mount roots
    (inside a container with a cgroup namespace the root *is* the container's cgroup)."""
    files: list[Path] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        own = Path(path.lstrip("/"))
        files += [base / p / name for p in (own, *own.parents)]
    files += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    return files


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
