"""Tier suggestions from a real trades table (SqlCatalog on SQLite in tmp_path).

What a user adopts is the TOML file, so tests check the ranking and the session window through
``suggest_tiers`` and then that the rendered file loads with ``load_tiers`` to the same tiers.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from typer.testing import CliRunner

from k2 import cli, tier_suggestion
from k2.config import IcebergSettings
from k2.lake import TableWriter, ensure_tables, open_catalog
from k2.lake.tables import market_arrow_schema
from k2.shedding import load_tiers
from k2.tier_suggestion import ExchangeTiers, SymbolNotional, TierSuggestion, suggest_tiers
from k2.validation import ValidationRules, decode_batch

NOW_US = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
RULES = ValidationRules(
    known_exchanges=frozenset({"ASX", "SIM"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)

Trade = tuple[str, str, int, float, int]  # exchange, symbol, session, price, qty


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = open_catalog(IcebergSettings(warehouse=str(tmp_path / "wh")))
    yield cat
    cat.engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def trades(catalog: Catalog, tmp_path: Path) -> Table:
    return ensure_tables(catalog, IcebergSettings(warehouse=str(tmp_path / "wh")))["trades"]


class Lander:
    """Commits trades to partition 0 of the table, one Iceberg commit per call."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.writer = TableWriter(table, "trades", "test")
        self.next_offset: int | None = None
        self.seq = itertools.count(1)

    def land(self, trades: list[Trade]) -> None:
        first = self.next_offset or 0
        offsets = list(range(first, first + len(trades)))
        payloads = [
            msgspec.json.encode(
                dict(
                    schema_version=1,
                    exchange=exchange,
                    symbol=symbol,
                    session=session,
                    seq=next(self.seq),
                    ts=_session_ts_us(session),
                    price=price,
                    qty=qty,
                    trade_id=f"t{o}",
                )
            )
            for o, (exchange, symbol, session, price, qty) in zip(offsets, trades, strict=True)
        ]
        decoded = decode_batch("trades", payloads, [0] * len(payloads), offsets, RULES, NOW_US)
        assert decoded.rejects == []
        rows: pa.Table = decoded.rows.cast(market_arrow_schema("trades"))
        self.writer.commit(rows, {0: first + len(trades)}, {0: self.next_offset})
        self.next_offset = first + len(trades)
        self.table.refresh()


def _session_ts_us(session: int) -> int:
    day = datetime.strptime(str(session), "%Y%m%d").replace(hour=1, tzinfo=UTC)
    return int(day.timestamp() * 1_000_000)


@pytest.fixture
def lander(trades: Table) -> Lander:
    return Lander(trades)


def ranking(suggestion: TierSuggestion, exchange: str) -> list[tuple[str, float]]:
    (ex,) = [e for e in suggestion.exchanges if e.exchange == exchange]
    return [(s.symbol, s.notional) for s in ex.ranked]


def round_trip(suggestion: TierSuggestion, tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "suggested.toml"
    path.write_text(suggestion.to_toml())
    return load_tiers([path])


# ---------------------------------------------------------------------------- ranking


def test_symbols_rank_by_notional_and_split_into_tier1_tier2_and_the_rest(
    lander: Lander, trades: Table
) -> None:
    lander.land(
        [
            ("ASX", "BHP", 20240102, 40.0, 1_000),  # 40,000
            ("ASX", "BHP", 20240102, 41.0, 1_000),  # + 41,000 = 81,000
            ("ASX", "RIO", 20240102, 120.0, 500),  # 60,000
            ("ASX", "CBA", 20240102, 100.0, 300),  # 30,000
            ("ASX", "DVN", 20240102, 1.0, 100),  # 100
            ("ASX", "MWR", 20240102, 0.5, 10),  # 5
        ]
    )

    suggestion = suggest_tiers(trades, tier1=2, tier2=2)

    assert ranking(suggestion, "ASX") == [
        ("BHP", 81_000.0),
        ("RIO", 60_000.0),
        ("CBA", 30_000.0),
        ("DVN", 100.0),
        ("MWR", 5.0),
    ]
    (asx,) = suggestion.exchanges
    assert asx.ranked[0].trades == 2
    assert asx.tier1 == ["BHP", "RIO"]
    assert asx.tier2 == ["CBA", "DVN"]
    assert suggestion.tiers() == {"BHP": 1, "RIO": 1, "CBA": 2, "DVN": 2}


def test_only_the_newest_n_sessions_with_trades_count(lander: Lander, trades: Table) -> None:
    # OLD was the biggest name a week ago and has not traded since; 20240106-07 is a weekend,
    # so the newest three sessions are 0105, 0108 and 0109, not three calendar days.
    lander.land([("ASX", "OLD", s, 100.0, 10_000) for s in (20240102, 20240103, 20240104)])
    lander.land([("ASX", "NEW", s, 10.0, 100) for s in (20240104, 20240105, 20240108, 20240109)])
    lander.land([("ASX", "MID", 20240105, 5.0, 100)])

    suggestion = suggest_tiers(trades, sessions=3, tier1=1, tier2=5)

    (asx,) = suggestion.exchanges
    assert asx.sessions == (20240105, 20240108, 20240109)
    assert ranking(suggestion, "ASX") == [("NEW", 3_000.0), ("MID", 500.0)]
    assert asx.tier1 == ["NEW"]


def test_each_exchange_ranks_over_its_own_newest_sessions(lander: Lander, trades: Table) -> None:
    lander.land(
        [
            ("ASX", "BHP", 20140310, 35.0, 100),
            ("ASX", "BHP", 20140311, 35.0, 100),
            ("ASX", "RIO", 20140311, 60.0, 100),
            ("SIM", "SIM1A001", 20251230, 10.0, 10),
            ("SIM", "SIM1A002", 20251231, 20.0, 10),
        ]
    )

    suggestion = suggest_tiers(trades, sessions=1, tier1=1, tier2=0)

    assert [e.exchange for e in suggestion.exchanges] == ["ASX", "SIM"]
    assert ranking(suggestion, "ASX") == [("RIO", 6_000.0), ("BHP", 3_500.0)]
    assert ranking(suggestion, "SIM") == [("SIM1A002", 200.0)]
    assert suggestion.tiers() == {"RIO": 1, "SIM1A002": 1}


def test_exchange_option_limits_the_suggestion_to_that_exchange(lander: Lander, trades: Table) -> None:
    lander.land([("ASX", "BHP", 20140310, 35.0, 100), ("SIM", "SIM1A001", 20251231, 10.0, 10)])

    suggestion = suggest_tiers(trades, exchange="SIM")

    assert [e.exchange for e in suggestion.exchanges] == ["SIM"]
    assert suggestion.tiers() == {"SIM1A001": 1}
    assert suggest_tiers(trades, exchange="NYSE").exchanges == ()


def test_equal_notionals_rank_by_symbol_name(lander: Lander, trades: Table) -> None:
    # 0.1 x 3 in one batch and 0.3 x 1 elsewhere differ in the last bits of a float sum.
    lander.land([("ASX", "ZZZ", 20240102, 0.1, 1)] * 3 + [("ASX", "AAA", 20240102, 0.3, 1)])
    lander.land([("ASX", "MMM", 20240102, 0.3, 1), ("ASX", "BIG", 20240102, 9.0, 1)])

    suggestion = suggest_tiers(trades, tier1=2, tier2=1)

    assert [s for s, _ in ranking(suggestion, "ASX")] == ["BIG", "AAA", "MMM", "ZZZ"]
    assert suggestion.tiers() == {"BIG": 1, "AAA": 1, "MMM": 2}


def test_totals_are_the_same_when_partial_sums_are_folded_every_batch(
    lander: Lander, trades: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    for session in (20240102, 20240103, 20240104):
        lander.land([("ASX", "BHP", session, 40.0, 100), ("ASX", "RIO", session, 100.0, 30)])
    expected = suggest_tiers(trades)

    monkeypatch.setattr(tier_suggestion, "_FOLD_EVERY", 1)
    folded = suggest_tiers(trades)

    assert folded == expected
    assert ranking(folded, "ASX") == [("BHP", 12_000.0), ("RIO", 9_000.0)]
    assert [s.trades for s in folded.exchanges[0].ranked] == [3, 3]


def test_an_empty_table_suggests_nothing(trades: Table, tmp_path: Path) -> None:
    suggestion = suggest_tiers(trades)

    assert suggestion.exchanges == ()
    assert suggestion.snapshot_id is None
    assert round_trip(suggestion, tmp_path) == {}
    assert "No trades found" in suggestion.to_toml()


def test_bad_arguments_are_refused(trades: Table) -> None:
    with pytest.raises(ValueError, match="sessions"):
        suggest_tiers(trades, sessions=0)
    with pytest.raises(ValueError, match="tier sizes"):
        suggest_tiers(trades, tier1=-1)


# ---------------------------------------------------------------------------- the TOML file


def test_toml_loads_with_load_tiers_to_the_suggested_tiers(
    lander: Lander, trades: Table, tmp_path: Path
) -> None:
    lander.land(
        [("SIM", f"SIM1A{n:03d}", 20251231, float(n), 100) for n in range(1, 31)]
        + [("ASX", "BHP", 20140310, 35.0, 100), ("ASX", "RIO", 20140310, 60.0, 100)]
    )
    suggestion = suggest_tiers(trades, tier1=5, tier2=10)

    loaded = round_trip(suggestion, tmp_path)

    assert loaded == suggestion.tiers()
    assert sorted(s for s, t in loaded.items() if t == 1) == sorted(
        ["BHP", "RIO", *(f"SIM1A{n:03d}" for n in range(26, 31))]
    )
    assert sum(t == 2 for t in loaded.values()) == 10


def test_toml_header_says_how_it_was_computed(lander: Lander, trades: Table) -> None:
    lander.land([("ASX", "BHP", s, 40.0, 1_000) for s in (20140310, 20140311)])
    lander.land([("ASX", "RIO", 20140311, 60.0, 1_000)])

    text = suggest_tiers(trades, sessions=5, tier1=20, tier2=80).to_toml()
    header = text.split("[tiers]")[0]

    assert all(line.startswith("#") for line in header.strip().splitlines())
    assert "market.trades" in header
    assert "newest 5 sessions" in header
    assert "ASX: 2 symbols traded in 2 sessions (20140310, 20140311)" in header
    assert "BHP" in header and "80,000" in header  # notional per symbol
    assert "RIO" in header and "60,000" in header
    assert "all 2 traded symbols are tier 1" in header  # fewer names than tier 1 holds


def test_toml_shows_a_few_symbols_below_the_cut_and_sums_the_rest() -> None:
    ranked = tuple(SymbolNotional(f"S{n:03d}", 1000.0 - n, 1) for n in range(40))
    suggestion = TierSuggestion(
        "market.trades", 1, 5, 2, 3, (ExchangeTiers("SIM", (20250101,), ranked, 2, 3),)
    )

    text = suggestion.to_toml()

    assert "S014" in text  # rank 15: the 10th below the cut
    assert "S015" not in text
    assert "25 more tier-3 symbols" in text


def test_toml_quotes_symbols_that_need_escaping(tmp_path: Path) -> None:
    odd = ['A"B', "C\\D", "E\x7fF", "Ünï"]
    ranked = tuple(SymbolNotional(s, 10.0 - i, 1) for i, s in enumerate(odd))
    suggestion = TierSuggestion("t", 1, 5, 2, 2, (ExchangeTiers("X", (20250101,), ranked, 2, 2),))

    assert round_trip(suggestion, tmp_path) == {'A"B': 1, "C\\D": 1, "E\x7fF": 2, "Ünï": 2}


# ---------------------------------------------------------------------------- k2 tiers suggest


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli, "configure_logging", lambda _cfg: None)  # keep structlog off the runner's stderr
    path = tmp_path / "k2.toml"
    path.write_text(f'[iceberg]\nwarehouse = "{tmp_path / "wh"}"\n')
    return path


def test_k2_tiers_suggest_writes_a_tier_file_for_one_exchange(
    lander: Lander, config: Path, tmp_path: Path
) -> None:
    lander.land([("ASX", "BHP", 20140310, 35.0, 100), ("ASX", "RIO", 20140310, 60.0, 100)])
    lander.land([("SIM", "SIM1A001", 20251231, 10.0, 10)])
    out = tmp_path / "asx.toml"

    result = CliRunner().invoke(
        cli.app,
        ["--config", str(config), "tiers", "suggest", "--exchange", "ASX", "--tier1", "1", "--out", str(out)],
    )

    assert result.exit_code == 0, result.output
    assert load_tiers([out]) == {"RIO": 1, "BHP": 2}


def test_k2_tiers_suggest_prints_to_stdout_and_fails_without_trades(lander: Lander, config: Path) -> None:
    lander.land([("SIM", "SIM1A001", 20251231, 10.0, 10)])

    printed = CliRunner().invoke(cli.app, ["--config", str(config), "tiers", "suggest"])
    missing = CliRunner().invoke(cli.app, ["--config", str(config), "tiers", "suggest", "--exchange", "ASX"])

    assert printed.exit_code == 0, printed.output
    assert tomllib.loads(printed.stdout)["tiers"] == {"tier1": ["SIM1A001"], "tier2": []}
    assert missing.exit_code == 1
    assert "no trades of exchange ASX" in missing.stderr
