"""Tier suggestions: rank symbols by the notional they traded lately, as a tier file to review.

Static tier files (``config/tiers/*.toml``, see ``k2.shedding``) go stale as liquidity moves.
:func:`suggest_tiers` reads the ``trades`` table and, per exchange, sums ``price x qty`` per
symbol over that exchange's newest ``sessions`` distinct sessions (``session`` is the
exchange-local trading date, so each exchange gets its own window). The top ``tier1`` symbols
are tier 1, the next ``tier2`` are tier 2; everything else is tier 3, which a tier file need not
list. Equal notionals (to the cent) rank by symbol name, so the same table always gives the same
file.

Both reads come from one snapshot and stream record batches, so memory stays bounded by a batch
and the per-symbol totals, whatever the table's size: first the distinct ``(exchange, session)``
pairs (two narrow columns), then only the rows of the chosen sessions (a ``row_filter`` that lets
Iceberg skip files by their ``session`` bounds), four columns of them.

:meth:`TierSuggestion.to_toml` renders a file that :func:`k2.shedding.load_tiers` reads, with the
computation and every tier-1/tier-2 notional in comments, for a person to review and adopt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In, Or
from pyiceberg.table import Table

__all__ = ["ExchangeTiers", "SymbolNotional", "TierSuggestion", "suggest_tiers"]

_TIER3_SHOWN = 10  # tier-3 symbols listed (as comments) below the cut, so a reviewer sees the margin
_SYMBOLS_PER_LINE = 8
# Partial per-batch sums are folded together once this many pile up (bounds memory on big scans).
_FOLD_EVERY = 64


@dataclass(frozen=True, slots=True)
class SymbolNotional:
    symbol: str
    notional: float  # sum of price x qty, in the exchange's price currency
    trades: int


@dataclass(frozen=True, slots=True)
class ExchangeTiers:
    """One exchange's ranking over its session window; ``ranked`` is most notional first."""

    exchange: str
    sessions: tuple[int, ...]  # the window, oldest first
    ranked: tuple[SymbolNotional, ...]
    tier1_size: int
    tier2_size: int

    @property
    def tier1(self) -> list[str]:
        return [s.symbol for s in self.ranked[: self.tier1_size]]

    @property
    def tier2(self) -> list[str]:
        return [s.symbol for s in self.ranked[self.tier1_size : self.tier1_size + self.tier2_size]]

    def tier_of(self, rank: int) -> int:
        """Tier of the symbol at 0-based ``rank``."""
        if rank < self.tier1_size:
            return 1
        return 2 if rank < self.tier1_size + self.tier2_size else 3


@dataclass(frozen=True, slots=True)
class TierSuggestion:
    """Suggested tiers for every exchange found (sorted by exchange), and how they were computed."""

    table: str
    snapshot_id: int | None
    sessions_asked: int
    tier1_size: int
    tier2_size: int
    exchanges: tuple[ExchangeTiers, ...]

    def tiers(self) -> dict[str, int]:
        """Symbol -> tier (1 or 2), as :func:`k2.shedding.load_tiers` reads :meth:`to_toml` back:
        a symbol ranked on several exchanges gets its lowest tier."""
        out: dict[str, int] = {}
        for ex in self.exchanges:
            for tier, symbols in ((1, ex.tier1), (2, ex.tier2)):
                for symbol in symbols:
                    out[symbol] = min(tier, out.get(symbol, tier))
        return out

    def to_toml(self) -> str:
        """A tier file (the format of ``config/tiers/*.toml``) with its derivation in comments."""
        lines = [
            "# Suggested tiers, by traded notional (sum of price x qty over the trades table).",
            "#",
            f"# Made by `k2 tiers suggest` from table {self.table}, snapshot {self.snapshot_id}.",
            f"# Rule, per exchange over its newest {self.sessions_asked} sessions with trades: tier 1 = "
            f"the {self.tier1_size} symbols",
            f"# with the most notional, tier 2 = the next {self.tier2_size}; every other symbol is "
            "tier 3 (unlisted).",
            "# Equal notionals (to the cent) rank by symbol name. Review before adopting, e.g. as",
            "# config/tiers/<exchange>.toml (one exchange per file: k2 tiers suggest --exchange X).",
        ]
        if not self.exchanges:
            lines += ["#", "# No trades found: every symbol would be tier 3."]
        for ex in self.exchanges:
            lines += ["#", *_describe(ex)]
        lines += ["", "[tiers]"]
        lines += _toml_array("tier1", [(ex.exchange, ex.tier1) for ex in self.exchanges])
        lines += _toml_array("tier2", [(ex.exchange, ex.tier2) for ex in self.exchanges])
        return "\n".join(lines) + "\n"


def suggest_tiers(
    trades: Table,
    *,
    sessions: int = 5,
    tier1: int = 20,
    tier2: int = 80,
    exchange: str | None = None,
) -> TierSuggestion:
    """Rank each exchange's symbols by notional over its newest ``sessions`` sessions.

    ``trades`` is k2's trades table; ``exchange`` limits the result to one exchange code (as
    stored, case-sensitive). An exchange with no trades is simply absent from the result.

    Raises:
        ValueError: ``sessions < 1`` or a negative tier size.
    """
    if sessions < 1 or tier1 < 0 or tier2 < 0:
        raise ValueError(f"need sessions >= 1 and tier sizes >= 0, got {sessions}, {tier1}, {tier2}")
    snapshot = trades.current_snapshot()
    snapshot_id = snapshot.snapshot_id if snapshot is not None else None
    name = ".".join(trades.name())
    if snapshot_id is None:
        return TierSuggestion(name, None, sessions, tier1, tier2, ())
    scope: BooleanExpression = EqualTo("exchange", exchange) if exchange is not None else AlwaysTrue()
    windows = _newest_sessions(_batches(trades, scope, ("exchange", "session"), snapshot_id), sessions)
    if not windows:
        return TierSuggestion(name, snapshot_id, sessions, tier1, tier2, ())
    in_window = [And(EqualTo("exchange", ex), In("session", set(s))) for ex, s in sorted(windows.items())]
    row_filter = in_window[0] if len(in_window) == 1 else Or(*in_window)
    totals = _notional_by_symbol(
        _batches(trades, row_filter, ("exchange", "symbol", "price", "qty"), snapshot_id)
    )
    ranked = _rank(totals)
    exchanges = tuple(
        ExchangeTiers(ex, windows[ex], tuple(ranked.get(ex, ())), tier1, tier2) for ex in sorted(windows)
    )
    return TierSuggestion(name, snapshot_id, sessions, tier1, tier2, exchanges)


# -- reading ------------------------------------------------------------------------------------


def _batches(
    table: Table, row_filter: BooleanExpression, fields: tuple[str, ...], snapshot_id: int
) -> Iterator[pa.RecordBatch]:
    reader = table.scan(row_filter=row_filter, selected_fields=fields, snapshot_id=snapshot_id)
    yield from reader.to_arrow_batch_reader()


def _newest_sessions(batches: Iterable[pa.RecordBatch], n: int) -> dict[str, tuple[int, ...]]:
    """Exchange -> its newest ``n`` distinct sessions, oldest first."""
    seen: dict[str, set[int]] = {}
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pairs = pa.Table.from_batches([batch]).group_by(["exchange", "session"], use_threads=False)
        for row in pairs.aggregate([]).to_pylist():
            seen.setdefault(row["exchange"], set()).add(int(row["session"]))
    return {ex: tuple(sorted(s)[-n:]) for ex, s in seen.items()}


def _notional_by_symbol(batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """Columns exchange, symbol, notional, trades: one row per (exchange, symbol)."""
    partials: list[pa.Table] = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        notional = pc.multiply(batch["price"], pc.cast(batch["qty"], pa.float64()))
        t = pa.table({"exchange": batch["exchange"], "symbol": batch["symbol"], "notional": notional})
        partials.append(_fold(t, [("notional", "sum"), ("notional", "count")]))
        if len(partials) >= _FOLD_EVERY:
            partials = [_fold_partials(partials)]
    if not partials:
        return pa.table({"exchange": [], "symbol": [], "notional": [], "trades": []})
    return _fold_partials(partials)


def _fold(t: pa.Table, aggregations: list[tuple[str, str]]) -> pa.Table:
    out = t.group_by(["exchange", "symbol"], use_threads=False).aggregate(aggregations)
    names = {"notional_sum": "notional", "notional_count": "trades", "trades_sum": "trades"}
    return out.rename_columns([names.get(c, c) for c in out.column_names])


def _fold_partials(partials: list[pa.Table]) -> pa.Table:
    both = pa.concat_tables(partials, promote_options="permissive")
    return _fold(both, [("notional", "sum"), ("trades", "sum")])


def _rank(totals: pa.Table) -> dict[str, list[SymbolNotional]]:
    out: dict[str, list[SymbolNotional]] = {}
    for row in totals.to_pylist():
        out.setdefault(row["exchange"], []).append(
            SymbolNotional(row["symbol"], float(row["notional"]), int(row["trades"]))
        )
    for symbols in out.values():
        # Rounded to the cent: sums folded in a different batch order differ in the last bits,
        # and a tie must not be decided by that.
        symbols.sort(key=lambda s: (-round(s.notional, 2), s.symbol))
    return out


# -- rendering ----------------------------------------------------------------------------------


def _describe(ex: ExchangeTiers) -> list[str]:
    n = len(ex.ranked)
    lines = [
        f"# {_printable(ex.exchange)}: {n:,} symbols traded in {len(ex.sessions)} sessions "
        f"({', '.join(map(str, ex.sessions))}).",
    ]
    if 0 < n <= ex.tier1_size:
        lines.append(f"#   Fewer symbols than tier 1 holds: all {n} traded symbols are tier 1 (never shed).")
    shown = min(n, ex.tier1_size + ex.tier2_size + _TIER3_SHOWN)
    names = [_printable(s.symbol) for s in ex.ranked[:shown]]
    width = max(6, *map(len, names))
    lines.append(f"#   {'rank':>5}  {'symbol':<{width}}  {'notional':>20}  {'trades':>11}  tier")
    for rank, (s, name) in enumerate(zip(ex.ranked, names, strict=False)):
        lines.append(
            f"#   {rank + 1:>5}  {name:<{width}}  {s.notional:>20,.0f}  {s.trades:>11,}  {ex.tier_of(rank)}"
        )
    rest = ex.ranked[shown:]
    if rest:
        total = sum(s.notional for s in rest)
        lines.append(f"#   ... {len(rest):,} more tier-3 symbols, {total:,.0f} notional in all")
    return lines


def _toml_array(key: str, groups: list[tuple[str, list[str]]]) -> list[str]:
    """``key = [...]``, each exchange's symbols under a comment naming it (valid TOML)."""
    if not any(symbols for _, symbols in groups):
        return [f"{key} = []"]
    lines = [f"{key} = ["]
    for exchange, symbols in groups:
        if not symbols:
            continue
        if len(groups) > 1:
            lines.append(f"    # {_printable(exchange)}")
        for i in range(0, len(symbols), _SYMBOLS_PER_LINE):
            chunk = symbols[i : i + _SYMBOLS_PER_LINE]
            lines.append("    " + " ".join(f"{_toml_string(s)}," for s in chunk))
    lines.append("]")
    return lines


def _toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except that TOML also forbids a raw DEL."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _printable(value: str) -> str:
    """``value`` as it may appear in a TOML comment (which allows no control characters)."""
    return value if value.isprintable() else _toml_string(value)
