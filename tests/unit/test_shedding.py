"""LoadShedder and tiers: what each level defers, decided on the Kafka key before any parse."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.config import Settings
from k2.degradation import Level
from k2.errors import ConfigError
from k2.feeds.simulator import SimulatorConfig, generate, symbol_tier
from k2.shedding import CLASSES, LoadShedder, load_tiers, shed_classes

REPO = Path(__file__).resolve().parents[2]
TIERS = {"BHP": 1, "RIO": 1, "CBA": 2}
KEYS: list[bytes | None] = [b"BHP", b"CBA", b"DVN", None, b"\xff\xfe", b"RIO"]


@pytest.fixture
def shedder() -> LoadShedder:
    return LoadShedder(TIERS)


@pytest.mark.parametrize(
    ("level", "shed"),
    [
        (Level.NORMAL, set()),
        (Level.SOFT, set()),
        (Level.GRACEFUL, {"low"}),
        (Level.AGGRESSIVE, {"low", "tier3"}),
        (Level.CIRCUIT_BREAK, {"low", "tier3", "tier2"}),
    ],
)
def test_each_level_sheds_its_classes_and_never_tier1(level: Level, shed: set[str]) -> None:
    assert shed_classes(level) == frozenset(shed)
    assert "tier1" not in shed_classes(level)
    assert shed_classes(level) <= set(CLASSES)


def test_higher_levels_shed_a_superset_of_lower_levels() -> None:
    levels = list(Level)
    for lower, higher in itertools.pairwise(levels):
        assert shed_classes(lower) <= shed_classes(higher)


@pytest.mark.parametrize("stream", ["trades", "quotes", "reference"])
@pytest.mark.parametrize("level", [Level.NORMAL, Level.SOFT])
def test_normal_and_soft_shed_nothing_on_any_stream(shedder: LoadShedder, stream: str, level: Level) -> None:
    assert shedder.decide(stream, KEYS, level) is None


@pytest.mark.parametrize("stream", ["trades", "quotes"])
def test_graceful_keeps_every_trade_and_quote(shedder: LoadShedder, stream: str) -> None:
    assert shedder.decide(stream, KEYS, Level.GRACEFUL) is None


@pytest.mark.parametrize("level", [Level.GRACEFUL, Level.AGGRESSIVE, Level.CIRCUIT_BREAK])
def test_reference_data_is_shed_whole_from_graceful_up(shedder: LoadShedder, level: Level) -> None:
    mask = shedder.decide("reference", KEYS, level)
    assert mask is not None and mask.dtype == np.bool_ and mask.shape == (len(KEYS),)
    assert mask.all()


def test_aggressive_sheds_tier3_including_unknown_missing_and_non_utf8_keys(shedder: LoadShedder) -> None:
    mask = shedder.decide("trades", KEYS, Level.AGGRESSIVE)
    assert mask is not None
    #                         BHP    CBA    DVN   None  \xff\xfe  RIO
    assert mask.tolist() == [False, False, True, True, True, False]


def test_circuit_break_sheds_everything_but_tier1(shedder: LoadShedder) -> None:
    mask = shedder.decide("quotes", KEYS, Level.CIRCUIT_BREAK)
    assert mask is not None
    assert mask.tolist() == [False, True, True, True, True, False]


def test_batch_with_only_tier1_keys_sheds_nothing_even_at_circuit_break(shedder: LoadShedder) -> None:
    assert shedder.decide("trades", [b"BHP", b"RIO", b"BHP"], Level.CIRCUIT_BREAK) is None


def test_empty_batch_sheds_nothing(shedder: LoadShedder) -> None:
    assert shedder.decide("trades", [], Level.CIRCUIT_BREAK) is None
    assert shedder.decide("reference", [], Level.CIRCUIT_BREAK) is None


def test_keys_are_matched_exactly_as_sent(shedder: LoadShedder) -> None:
    # A key is the symbol's UTF-8 bytes; anything else (case, padding) is another symbol: tier 3.
    assert [shedder.tier_of(k) for k in (b"BHP", b"bhp", b"BHP ", b"")] == [1, 3, 3, 3]


def test_non_ascii_symbols_are_matched_by_their_utf8_bytes() -> None:
    shedder = LoadShedder({"日経": 1})
    assert shedder.tier_of("日経".encode()) == 1
    assert shedder.tier_of("日経".encode("utf-16")) == 3


@pytest.mark.parametrize(
    ("stream", "key", "cls"),
    [
        ("trades", b"BHP", "tier1"),
        ("quotes", b"CBA", "tier2"),
        ("trades", b"DVN", "tier3"),
        ("trades", None, "tier3"),
        ("quotes", b"\xc3\x28", "tier3"),
        ("reference", b"BHP", "low"),
        ("reference", None, "low"),
    ],
)
def test_class_of_names_what_a_backfill_compares_with_shed_classes(
    shedder: LoadShedder, stream: str, key: bytes | None, cls: str
) -> None:
    assert shedder.class_of(stream, key) == cls


@settings(max_examples=200, deadline=None)
@given(
    stream=st.sampled_from(["trades", "quotes", "reference"]),
    keys=st.lists(st.sampled_from(KEYS) | st.binary(max_size=6), max_size=50),
    level=st.sampled_from(list(Level)),
)
def test_mask_sheds_exactly_the_messages_whose_class_the_level_sheds(
    stream: str, keys: list[bytes | None], level: Level
) -> None:
    shedder = LoadShedder(TIERS)
    expected = [shedder.class_of(stream, k) in shed_classes(level) for k in keys]

    mask = shedder.decide(stream, keys, level)

    if any(expected):
        assert mask is not None and mask.shape == (len(keys),) and mask.tolist() == expected
    else:
        assert mask is None


def test_tiers_other_than_1_2_3_are_rejected() -> None:
    with pytest.raises(ValueError, match="tiers must be 1, 2 or 3"):
        LoadShedder({"BHP": 0})


# -- tier files -----------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_tiers_reads_lists_and_the_lowest_tier_wins_across_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", '[tiers]\ntier1 = ["BHP"]\ntier2 = ["CBA", "XYZ"]\n')
    b = write(tmp_path / "b.toml", '[tiers]\ntier1 = ["XYZ"]\ntier2 = ["BHP"]\ntier3 = ["DVN"]\n')

    assert load_tiers([a, b]) == {"BHP": 1, "CBA": 2, "XYZ": 1, "DVN": 3}
    assert load_tiers([b, a]) == load_tiers([a, b])


def test_load_tiers_reads_every_toml_file_in_a_directory(tmp_path: Path) -> None:
    write(tmp_path / "x.toml", '[tiers]\ntier1 = ["A"]\n')
    write(tmp_path / "y.toml", '[tiers]\ntier2 = ["B"]\n')
    write(tmp_path / "notes.txt", "not a tier file")

    assert load_tiers([tmp_path]) == {"A": 1, "B": 2}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('tier1 = ["A"]\n', "no \\[tiers\\] table"),
        ('[tiers]\ntier4 = ["A"]\n', "unknown keys \\['tier4'\\]"),
        ('[tiers]\ntier1 = "A"\n', "tier1 must be a list of symbols"),
        ("[tiers]\ntier1 = [1, 2]\n", "tier1 must be a list of symbols"),
        ("[tiers\n", "cannot read tier file"),
    ],
)
def test_malformed_tier_file_is_a_config_error_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=match) as err:
        load_tiers([path])
    assert "bad.toml" in str(err.value)


def test_missing_tier_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tier file not found"):
        load_tiers([tmp_path / "nope.toml"])


def test_repo_tier_files_load_with_the_default_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    tiers = load_tiers(Settings().shedding.tier_files)

    assert tiers["BHP"] == tiers["RIO"] == 1
    assert tiers["BTC-USD"] == tiers["ETH-BTC"] == 1
    assert tiers["SIM1A001"] == 1 and tiers["SIM2A040"] == 2


def test_sim_tier_file_matches_the_tiers_the_simulator_produces_by_default() -> None:
    tiers = load_tiers([REPO / "config" / "tiers" / "sim.toml"])
    shedder = LoadShedder(tiers)

    symbols = generate(SimulatorConfig()).symbols

    assert len(symbols) == 200
    assert all(shedder.tier_of(s.encode()) == symbol_tier(s) for s in symbols)
    assert {s for s in tiers} == {s for s in symbols if symbol_tier(s) < 3}


def test_asx_tier_file_keeps_the_two_liquid_sample_names_in_tier1() -> None:
    tiers = load_tiers([REPO / "config" / "tiers" / "asx.toml"])
    shedder = LoadShedder(tiers)

    assert [shedder.tier_of(s) for s in (b"BHP", b"RIO", b"DVN", b"MWR")] == [1, 1, 3, 3]
