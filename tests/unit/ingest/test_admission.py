"""Admission: shed by key before parsing, and name the offset spans to defer, per partition."""

from __future__ import annotations

import numpy as np

from k2.degradation import Level
from k2.ingest.admission import admit, needs_keys
from k2.shedding import LoadShedder

SHEDDER = LoadShedder({"BHP": 1, "CBA": 2})


def _batch(keys: list[bytes | None], partitions: list[int], offsets: list[int]) -> tuple:  # type: ignore[type-arg]
    return keys, np.asarray(partitions, np.int32), np.asarray(offsets, np.int64)


def test_nothing_is_shed_below_graceful_and_keys_are_not_even_needed() -> None:
    for level in (Level.NORMAL, Level.SOFT):
        assert not needs_keys(SHEDDER, level)
        keys, parts, offs = _batch([b"XYZ"], [0], [5])
        assert admit(SHEDDER, level, "trades", keys, parts, offs).keep is None


def test_aggressive_sheds_tier3_and_defers_each_partitions_whole_span() -> None:
    keys, parts, offs = _batch(
        [b"BHP", b"XYZ", b"CBA", b"ZZZ", b"BHP", b"QQQ"], [0, 0, 1, 1, 1, 2], [10, 11, 20, 21, 22, 30]
    )
    adm = admit(SHEDDER, Level.AGGRESSIVE, "trades", keys, parts, offs)
    assert adm.keep is not None
    assert adm.keep.tolist() == [True, False, True, False, True, False]
    assert [(s.partition, s.first, s.last, s.count) for s in adm.deferred] == [
        (0, 10, 11, 1),
        (1, 20, 22, 1),
        (2, 30, 30, 1),
    ]
    assert adm.classes == {"low", "tier3"}


def test_circuit_break_keeps_only_tier1_and_reference_data_is_low_priority() -> None:
    keys, parts, offs = _batch([b"BHP", b"CBA", None], [0, 0, 0], [1, 2, 3])
    adm = admit(SHEDDER, Level.CIRCUIT_BREAK, "trades", keys, parts, offs)
    assert adm.keep is not None and adm.keep.tolist() == [True, False, False]
    ref = admit(
        SHEDDER, Level.GRACEFUL, "reference", [b"BHP"], np.asarray([4], np.int32), np.asarray([7], np.int64)
    )
    assert ref.keep is not None and ref.keep.tolist() == [False]
    assert [(s.first, s.last, s.count) for s in ref.deferred] == [(7, 7, 1)]


def test_without_a_shedder_everything_is_admitted() -> None:
    keys, parts, offs = _batch([b"XYZ"], [0], [1])
    assert admit(None, Level.CIRCUIT_BREAK, "trades", keys, parts, offs).keep is None


def test_shed_messages_are_counted_per_class() -> None:
    keys, parts, offs = _batch([b"BHP", b"CBA", b"XYZ", b"QQQ"], [0, 0, 0, 0], [1, 2, 3, 4])
    cb = admit(SHEDDER, Level.CIRCUIT_BREAK, "trades", keys, parts, offs)
    assert cb.shed_by_class == {"tier2": 1, "tier3": 2}
    aggressive = admit(SHEDDER, Level.AGGRESSIVE, "quotes", keys, parts, offs)
    assert aggressive.shed_by_class == {"tier3": 2}
    ref = admit(SHEDDER, Level.GRACEFUL, "reference", keys, parts, offs)
    assert ref.shed_by_class == {"low": 4}
