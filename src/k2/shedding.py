"""Load shedding: which messages of a batch to defer at a degradation level, decided on the key.

Every message belongs to one **class**: ``low`` for reference data (the ``reference`` stream),
else ``tier1``, ``tier2`` or ``tier3`` by its symbol. A level sheds a fixed set of classes, most
expendable first, and never ``tier1``:

=============  ==========================
level          shed classes
=============  ==========================
NORMAL, SOFT   none
GRACEFUL       low
AGGRESSIVE     low, tier3
CIRCUIT_BREAK  low, tier3, tier2
=============  ==========================

Shedding defers, it never drops: the caller records shed offsets in the deferred ledger
(``k2.deferred_ledger``) and a backfill re-reads them later, landing exactly the messages whose
:meth:`LoadShedder.class_of` is in the range's recorded classes.

The decision uses only the stream and the Kafka key (the symbol as UTF-8), before any JSON is
parsed: shedding exists to save that parse. A key that is None, not UTF-8, or a symbol in no
tier file is tier 3. Symbols are looked up as the bytes they are sent as, so a batch costs one
dict lookup per message and no decode; the NORMAL path costs one dict lookup per batch.

:func:`load_tiers` (reads TOML files) is the one function here that does I/O.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from k2.degradation import Level
from k2.errors import ConfigError

__all__ = [
    "CLASSES",
    "LOW",
    "REFERENCE_STREAM",
    "TIER_CLASSES",
    "LoadShedder",
    "load_tiers",
    "shed_classes",
]

LOW = "low"
TIER_CLASSES: dict[int, str] = {1: "tier1", 2: "tier2", 3: "tier3"}
CLASSES: tuple[str, ...] = (LOW, *TIER_CLASSES.values())
REFERENCE_STREAM = "reference"
_DEFAULT_TIER = 3

_SHED: dict[Level, frozenset[str]] = {
    Level.NORMAL: frozenset(),
    Level.SOFT: frozenset(),
    Level.GRACEFUL: frozenset({LOW}),
    Level.AGGRESSIVE: frozenset({LOW, "tier3"}),
    Level.CIRCUIT_BREAK: frozenset({LOW, "tier3", "tier2"}),
}


def shed_classes(level: Level) -> frozenset[str]:
    """Classes whose messages are shed (deferred) at ``level``."""
    return _SHED[level]


class LoadShedder:
    """Decides, per batch, which messages to shed at a level; holds the symbol -> tier map."""

    def __init__(self, tiers: Mapping[str, int]) -> None:
        bad = {symbol: tier for symbol, tier in tiers.items() if tier not in TIER_CLASSES}
        if bad:
            raise ValueError(f"tiers must be 1, 2 or 3: {bad}")
        # Keyed by the bytes a producer sends, so no key is ever decoded: a key that is not UTF-8
        # (or None) matches nothing and is tier 3, exactly as if it had been decoded and not found.
        self._tier_of: dict[bytes | None, int] = {s.encode(): t for s, t in tiers.items()}
        # Per level: shed[tier] for tier codes 0..3 (0 unused), indexed by a batch's tier codes.
        self._by_tier: dict[Level, npt.NDArray[np.bool_] | None] = {}
        for level, classes in _SHED.items():
            table = np.array([False, *(TIER_CLASSES[t] in classes for t in (1, 2, 3))])
            self._by_tier[level] = table if table.any() else None

    def tier_of(self, key: bytes | None) -> int:
        return self._tier_of.get(key, _DEFAULT_TIER)

    def class_of(self, stream: str, key: bytes | None) -> str:
        """The class of one message: what a backfill compares with a range's shed classes."""
        if stream == REFERENCE_STREAM:
            return LOW
        return TIER_CLASSES[self.tier_of(key)]

    def decide(self, stream: str, keys: Sequence[bytes | None], level: Level) -> npt.NDArray[np.bool_] | None:
        """A mask over the batch, True = shed; None when nothing in it is shed at ``level``.

        ``stream`` is the stream role (``trades``, ``quotes``, ``reference``), not a topic name.
        """
        if not _SHED[level] or not keys:
            return None
        if stream == REFERENCE_STREAM:
            return np.ones(len(keys), dtype=np.bool_) if LOW in _SHED[level] else None
        table = self._by_tier[level]
        if table is None:
            return None
        codes = np.fromiter(
            map(self._tier_of.get, keys, itertools.repeat(_DEFAULT_TIER)), dtype=np.int8, count=len(keys)
        )
        mask = table[codes]
        return mask if mask.any() else None


def load_tiers(paths: Iterable[Path]) -> dict[str, int]:
    """Symbol -> tier from tier files (a directory stands for every ``*.toml`` in it, sorted).

    A file holds ``[tiers]`` with lists ``tier1``, ``tier2`` (and optionally ``tier3``, which
    only documents: unlisted symbols are tier 3 anyway). A symbol in several lists or files gets
    its lowest tier, so one exchange cannot demote another's tier-1 symbol.

    Raises:
        ConfigError: a path is missing, a file is not TOML, or ``[tiers]`` is malformed.
    """
    tiers: dict[str, int] = {}
    for file in _tier_files(paths):
        for symbol, tier in _read_tier_file(file).items():
            tiers[symbol] = min(tier, tiers.get(symbol, tier))
    return tiers


def _tier_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.toml"))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"tier file not found: {path}")
    return files


def _read_tier_file(file: Path) -> dict[str, int]:
    try:
        data = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read tier file {file}: {exc}") from exc
    section = data.get("tiers")
    if not isinstance(section, dict):
        raise ConfigError(f"tier file {file} has no [tiers] table")
    names = {name: tier for tier, name in TIER_CLASSES.items()}
    unknown = sorted(set(section) - set(names))
    if unknown:
        raise ConfigError(f"tier file {file}: unknown keys {unknown} (expected tier1, tier2, tier3)")
    out: dict[str, int] = {}
    for name, symbols in section.items():
        if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
            raise ConfigError(f"tier file {file}: {name} must be a list of symbols")
        for symbol in symbols:
            out[symbol] = min(names[name], out.get(symbol, names[name]))
    return out
