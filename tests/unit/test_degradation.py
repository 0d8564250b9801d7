"""DegradationManager: immediate escalation, slow one-step recovery, no flapping; memory budget."""

from __future__ import annotations

from pathlib import Path

import psutil
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.config import DegradationSettings, Settings
from k2.degradation import DegradationManager, Level, Signals, Transition, memory_budget

COOLDOWN = 30.0
CALM = Signals(lag=0, memory=0.1)


def manager(**overrides: object) -> DegradationManager:
    return DegradationManager(DegradationSettings.model_validate(overrides))


def lag(n: int) -> Signals:
    return Signals(lag=n, memory=0.1)


def mem(fraction: float) -> Signals:
    return Signals(lag=0, memory=fraction)


def feed(
    m: DegradationManager, signals: Signals, start: float, end: float, step: float = 1.0
) -> list[Transition]:
    """Feed the same signals every ``step`` seconds from ``start`` to ``end`` inclusive."""
    out = []
    t = start
    while t <= end:
        if (tr := m.update(signals, t)) is not None:
            out.append(tr)
        t += step
    return out


# -- escalation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (99_999, Level.NORMAL),
        (100_000, Level.SOFT),
        (499_999, Level.SOFT),
        (500_000, Level.GRACEFUL),
        (1_000_000, Level.AGGRESSIVE),
        (4_999_999, Level.AGGRESSIVE),
        (5_000_000, Level.CIRCUIT_BREAK),
        (10**9, Level.CIRCUIT_BREAK),
    ],
)
def test_lag_at_or_above_a_default_bound_enters_its_level(value: int, level: Level) -> None:
    m = manager()
    m.update(lag(value), 0.0)
    assert m.level == level


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (0.69, Level.NORMAL),
        (0.70, Level.SOFT),
        (0.80, Level.GRACEFUL),
        (0.90, Level.AGGRESSIVE),
        (0.95, Level.CIRCUIT_BREAK),
        (3.0, Level.CIRCUIT_BREAK),
    ],
)
def test_memory_at_or_above_a_default_bound_enters_its_level(value: float, level: Level) -> None:
    m = manager()
    m.update(mem(value), 0.0)
    assert m.level == level


def test_the_higher_of_lag_and_memory_decides_the_level() -> None:
    m = manager()
    m.update(Signals(lag=600_000, memory=0.91), 0.0)
    assert m.level == Level.AGGRESSIVE
    assert m.demanded(Signals(lag=6_000_000, memory=0.1)) == Level.CIRCUIT_BREAK


def test_escalation_jumps_several_levels_at_once_and_says_why() -> None:
    m = manager()

    tr = m.update(lag(612_000), 5.0)

    assert tr == Transition(
        at=5.0,
        previous=Level.NORMAL,
        level=Level.GRACEFUL,
        reason="lag 612000 >= 500000",
        lag=612_000,
        memory=0.1,
    )
    assert m.history == [tr]


def test_escalation_reason_names_memory_when_memory_demands_the_level() -> None:
    m = manager()
    tr = m.update(Signals(lag=150_000, memory=0.93), 0.0)
    assert tr is not None and tr.level == Level.AGGRESSIVE
    assert tr.reason == "memory 0.93 >= 0.90"


def test_escalation_reason_names_both_signals_when_both_demand_the_level() -> None:
    tr = manager().update(Signals(lag=1_200_000, memory=0.91), 0.0)
    assert tr is not None and tr.reason == "lag 1200000 >= 1000000; memory 0.91 >= 0.90"


def test_escalation_from_a_degraded_level_is_immediate_despite_cooldown() -> None:
    m = manager()
    m.update(lag(150_000), 0.0)
    tr = m.update(lag(2_000_000), 0.5)
    assert tr is not None and (tr.previous, tr.level) == (Level.SOFT, Level.AGGRESSIVE)


def test_steady_signals_cause_no_repeated_transitions() -> None:
    m = manager()
    assert len(feed(m, lag(600_000), 0, 300)) == 1
    assert m.level == Level.GRACEFUL


# -- recovery -------------------------------------------------------------------------------------


def test_recovery_waits_for_the_cooldown_then_steps_down_one_level() -> None:
    m = manager()
    m.update(lag(6_000_000), 0.0)

    assert m.update(CALM, 1.0) is None
    assert m.update(CALM, 30.9) is None  # calm since 1.0: 29.9 s
    tr = m.update(CALM, 31.0)

    assert tr is not None and (tr.previous, tr.level) == (Level.CIRCUIT_BREAK, Level.AGGRESSIVE)
    assert tr.reason == "recovered: lag 0 < 2500000 and memory 0.10 < 0.855 for 30s"


def test_full_recovery_takes_one_cooldown_per_level() -> None:
    m = manager()
    m.update(lag(6_000_000), 0.0)

    transitions = feed(m, CALM, 1.0, 200.0)

    assert [t.level for t in transitions] == [Level.AGGRESSIVE, Level.GRACEFUL, Level.SOFT, Level.NORMAL]
    assert [t.at for t in transitions] == [31.0, 61.0, 91.0, 121.0]


def test_signal_below_the_entry_bound_but_above_the_recovery_bound_holds_the_level() -> None:
    m = manager()
    m.update(lag(600_000), 0.0)  # GRACEFUL; recovery needs lag < 250_000

    assert feed(m, lag(300_000), 1.0, 600.0) == []
    assert m.level == Level.GRACEFUL


def test_memory_must_also_be_below_its_recovery_bound_to_recover() -> None:
    m = manager()
    m.update(lag(600_000), 0.0)  # GRACEFUL; memory recovery bound 0.80 x 0.9 = 0.72

    assert feed(m, Signals(lag=0, memory=0.75), 1.0, 600.0) == []
    assert [t.level for t in feed(m, CALM, 601.0, 640.0)] == [Level.SOFT]


def test_cooldown_restarts_when_a_signal_rises_above_its_recovery_bound() -> None:
    m = manager()
    m.update(lag(600_000), 0.0)  # GRACEFUL
    feed(m, CALM, 1.0, 25.0)
    m.update(lag(300_000), 26.0)  # below GRACEFUL's entry, above its recovery bound 250_000

    assert feed(m, CALM, 27.0, 56.0) == []  # calm again since 27.0: only 29 s by 56.0
    tr = m.update(CALM, 57.0)
    assert tr is not None and tr.level == Level.SOFT


def test_cooldown_restarts_after_every_transition() -> None:
    m = manager()
    m.update(lag(600_000), 0.0)
    feed(m, CALM, 1.0, 31.0)  # steps down to SOFT at 31.0
    assert m.level == Level.SOFT

    assert feed(m, CALM, 32.0, 60.0) == []
    tr = m.update(CALM, 61.0)
    assert tr is not None and tr.level == Level.NORMAL


def test_recovery_stops_at_the_level_whose_recovery_bound_the_signals_exceed() -> None:
    m = manager()
    m.update(lag(1_500_000), 0.0)  # AGGRESSIVE; its recovery bound is 500_000
    transitions = feed(m, lag(450_000), 1.0, 600.0)  # demands SOFT, but GRACEFUL's bound is 250_000

    assert [t.level for t in transitions] == [Level.GRACEFUL]
    assert m.level == Level.GRACEFUL


def test_load_oscillating_faster_than_the_cooldown_does_not_flap() -> None:
    m = manager()
    transitions: list[Transition] = []
    for cycle in range(100):  # 10 s over the GRACEFUL bound, 20 s idle, for 50 minutes
        t0 = cycle * 30.0
        transitions += feed(m, lag(600_000), t0, t0 + 9.0)
        transitions += feed(m, CALM, t0 + 10.0, t0 + 29.0)

    assert [(t.previous, t.level) for t in transitions] == [(Level.NORMAL, Level.GRACEFUL)]


def test_configured_cooldown_and_factors_are_used() -> None:
    m = manager(cooldown_s=5.0, lag_recovery_factor=0.9)
    m.update(lag(150_000), 0.0)  # SOFT; recovery bound 90_000

    assert feed(m, lag(85_000), 1.0, 5.0) == []
    tr = m.update(lag(85_000), 6.0)
    assert tr is not None and tr.level == Level.NORMAL


def test_disabled_manager_stays_normal_whatever_the_load() -> None:
    m = manager(enabled=False)

    assert feed(m, Signals(lag=10**9, memory=5.0), 0.0, 100.0) == []
    assert m.level == Level.NORMAL and m.history == []
    assert m.status().signals == Signals(lag=10**9, memory=5.0)


def test_status_reports_level_since_signals_and_cooldown_start() -> None:
    m = manager()
    m.update(lag(600_000), 10.0)
    m.update(CALM, 12.0)
    s = m.status()
    assert (s.enabled, s.level, s.since, s.signals, s.calm_since) == (True, Level.GRACEFUL, 10.0, CALM, 12.0)

    m.update(lag(300_000), 13.0)
    assert m.status().calm_since is None


def test_history_keeps_only_the_most_recent_transitions() -> None:
    m = DegradationManager(DegradationSettings(cooldown_s=0.0), history=3)
    for i in range(10):
        m.update(lag(150_000), 2.0 * i)
        m.update(CALM, 2.0 * i + 1)

    assert len(m.history) == 3
    assert [t.at for t in m.history] == [17.0, 18.0, 19.0]


# -- properties -----------------------------------------------------------------------------------

_lag = st.one_of(
    st.sampled_from([0, 49_999, 50_000, 99_999, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000]),
    st.integers(0, 8_000_000),
)
_memory = st.one_of(st.sampled_from([0.0, 0.63, 0.7, 0.72, 0.8, 0.81, 0.9, 0.855, 0.95]), st.floats(0, 1.5))
_steps = st.lists(
    st.tuples(st.floats(0.0, 45.0), st.builds(Signals, lag=_lag, memory=_memory)), min_size=1, max_size=200
)


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_any_signal_sequence_escalates_at_once_and_recovers_one_cooled_step_at_a_time(
    steps: list[tuple[float, Signals]],
) -> None:
    m = manager()
    now = 0.0
    returned: list[Transition] = []
    last_transition_at: float | None = None
    seen: list[tuple[float, Signals]] = []  # observations after the last transition
    for dt, signals in steps:
        now += dt
        before = m.level
        tr = m.update(signals, now)
        seen.append((now, signals))

        assert m.level >= m.demanded(signals)
        if tr is None:
            assert m.level == before
            continue
        assert (tr.previous, tr.level, tr.at) == (before, m.level, now)
        returned.append(tr)
        if tr.level > tr.previous:
            assert tr.level == m.demanded(signals)  # escalates exactly to what is demanded
        else:
            assert tr.level == tr.previous - 1
            assert last_transition_at is None or now - last_transition_at >= COOLDOWN
            # Calm (below the recovery bounds) without a break for COOLDOWN up to now.
            lag_bound, mem_bound = m.recovery_bounds(tr.previous)
            calm = [s.lag < lag_bound and s.memory < mem_bound for _, s in seen]
            assert calm[-1]
            if False in calm:
                calm_from = seen[len(calm) - calm[::-1].index(False)][0]
                assert now - calm_from >= COOLDOWN
        last_transition_at = now
        seen = []
    assert m.history == returned  # every transition is kept for status (fewer than 256 here)


@settings(max_examples=100, deadline=None)
@given(
    high=st.builds(Signals, lag=st.integers(100_000, 8_000_000), memory=st.floats(0, 1.5)),
    period=st.floats(1.0, 29.0),
    cycles=st.integers(2, 50),
)
def test_any_load_that_returns_within_the_cooldown_never_steps_down(
    high: Signals, period: float, cycles: int
) -> None:
    m = manager()
    m.update(high, 0.0)
    peak = m.level
    for k in range(1, cycles):
        m.update(CALM, k * period - period / 2)
        m.update(high, k * period)

    assert m.level == peak
    assert len(m.history) == 1


# -- settings and the memory budget ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"lag_thresholds": [100, 100, 300, 400]},
        {"lag_thresholds": [400, 300, 200, 100]},
        {"memory_thresholds": [0.7, 0.9, 0.8, 0.95]},
        {"lag_thresholds": [0, 1, 2, 3]},
        {"lag_thresholds": [1, 2, 3]},
        {"lag_recovery_factor": 0.0},
        {"memory_recovery_factor": 1.5},
    ],
)
def test_thresholds_that_are_not_increasing_or_factors_out_of_range_are_rejected(
    overrides: dict[str, object],
) -> None:
    with pytest.raises(pydantic.ValidationError):
        DegradationSettings.model_validate(overrides)


def test_degradation_and_shedding_are_on_by_default() -> None:
    s = Settings()
    assert s.degradation.enabled and s.shedding.enabled
    assert s.degradation.cooldown_s == 30.0
    assert s.degradation.memory_budget_bytes == 0


def test_configured_memory_budget_is_used_as_is(tmp_path: Path) -> None:
    assert memory_budget(123_456, cgroup_root=tmp_path, proc_cgroup=tmp_path / "none") == 123_456


def test_memory_budget_without_cgroup_limit_is_the_machine_memory(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")

    budget = memory_budget(0, cgroup_root=tmp_path, proc_cgroup=tmp_path / "none")

    assert budget == psutil.virtual_memory().total


def test_memory_budget_is_the_cgroup_v2_limit_of_the_process_cgroup(tmp_path: Path) -> None:
    own = tmp_path / "system.slice" / "k2.service"
    own.mkdir(parents=True)
    (own / "memory.max").write_text("2147483648\n")
    (tmp_path / "system.slice" / "memory.max").write_text("max\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/k2.service\n")

    assert memory_budget(0, cgroup_root=tmp_path, proc_cgroup=proc) == 2 * 1024**3


def test_memory_budget_takes_the_tightest_limit_of_an_ancestor_cgroup(tmp_path: Path) -> None:
    own = tmp_path / "memory" / "docker" / "abc"
    own.mkdir(parents=True)
    (own / "memory.limit_in_bytes").write_text("4294967296\n")
    (tmp_path / "memory" / "docker" / "memory.limit_in_bytes").write_text("1073741824\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n0::/\n")

    assert memory_budget(0, cgroup_root=tmp_path, proc_cgroup=proc) == 1024**3


def test_memory_budget_never_exceeds_the_machine_memory(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{psutil.virtual_memory().total * 4}\n")

    assert (
        memory_budget(0, cgroup_root=tmp_path, proc_cgroup=tmp_path / "none") == psutil.virtual_memory().total
    )


def test_memory_budget_on_this_host_is_positive() -> None:
    assert 0 < memory_budget(0) <= psutil.virtual_memory().total
