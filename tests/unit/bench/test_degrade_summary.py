"""The degradation bench's summaries: percentiles over windows, completeness, CPU ratios, spreads."""

from __future__ import annotations

import pytest

from k2.bench.degrade import (
    Landed,
    caught_up_at,
    completeness,
    freshness_stats,
    freshness_windows,
    level_at,
    percentile,
    shed_cost,
    spread,
    summarize,
    time_above,
    value_at,
)
from k2.feeds.report import StreamRange


def stream(table: str, symbol: str, last: int, first: int = 1) -> StreamRange:
    return StreamRange(
        table=table,
        exchange="SIM",
        symbol=symbol,
        session=20261203,
        first_seq=first,
        last_seq=last,
        count=last - first + 1,
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    # Two samples: p50 is the lower one, p99 the higher one (no interpolation).
    assert (percentile([2.0, 1.0], 50), percentile([2.0, 1.0], 99)) == (1.0, 2.0)


def test_freshness_after_warmup_counts_only_that_class_and_time() -> None:
    t0 = 1000.0
    samples = [
        (t0 + 1, "tier1", 30.0),  # catch-up, before the warm-up ends: not counted
        (t0 + 11, "tier1", 0.2),
        (t0 + 12, "tier1", 0.4),
        (t0 + 12, "tier3", 9.0),  # another class: not counted
        (t0 + 13, "tier1", 0.9),
    ]
    stats = freshness_stats(samples, "tier1", t0 + 10)
    assert stats == {"n": 3, "p50": 0.4, "p99": 0.9, "max": 0.9}
    assert freshness_stats(samples, None, t0 + 10)["max"] == 9.0
    assert freshness_stats(samples, "tier2", t0)["n"] == 0


def test_freshness_windows_bucket_by_time_from_t0_and_keep_empty_windows() -> None:
    t0 = 50.0
    samples = [(t0 + 0.5, "tier1", 8.0), (t0 + 4.9, "tier1", 6.0), (t0 + 12.0, "tier1", 0.3)]
    windows = freshness_windows(samples, "tier1", t0, end=t0 + 14.0, window_s=5.0)
    assert [w["t"] for w in windows] == [0.0, 5.0, 10.0]
    assert windows[0] == {"t": 0.0, "n": 2, "p50": 6.0, "p99": 8.0, "max": 8.0}
    assert windows[1]["n"] == 0 and windows[1]["p99"] is None  # a window with no live sample shows
    assert windows[2]["p50"] == 0.3
    # Samples before t0 or after the end fall outside every window.
    assert freshness_windows([(t0 - 1, "tier1", 1.0)], "tier1", t0, t0 + 5)[0]["n"] == 0


def test_level_at_follows_the_transitions_in_force() -> None:
    timeline = [(10.0, 3), (40.0, 2), (70.0, 1), (100.0, 0)]
    assert level_at(timeline, 5.0) == 0
    assert level_at(timeline, 10.0) == 3
    assert level_at(timeline, 69.9) == 2
    assert level_at(timeline, 1e9) == 0
    assert level_at([], 1.0) == 0


def test_cpu_between_two_moments_is_interpolated_from_samples() -> None:
    times, cpu = [0.0, 1.0, 2.0], [0.5, 1.5, 1.6]
    assert value_at(times, cpu, 0.5) == pytest.approx(1.0)
    assert value_at(times, cpu, 1.5) - value_at(times, cpu, 0.5) == pytest.approx(0.55)
    assert value_at(times, cpu, -3.0) == 0.5 and value_at(times, cpu, 9.0) == 1.6  # clamped


def test_time_above_a_budget_counts_each_sample_until_the_next() -> None:
    times = [0.0, 1.0, 2.0, 3.5, 4.0]
    rss = [100.0, 700.0, 650.0, 500.0, 800.0]
    assert time_above(times, rss, 600.0) == pytest.approx(2.5)  # 1..2 and 2..3.5; the last has no next
    assert time_above(times, rss, 1000.0) == 0.0


def test_caught_up_is_the_start_of_the_final_streak_with_nothing_deferred_and_lag_small() -> None:
    statuses = [
        {"updated_at": 1.0, "lag": 0, "oldest_pending_since": None},  # before the first batch
        {"updated_at": 2.0, "lag": 3_000_000, "oldest_pending_since": None},
        {"updated_at": 3.0, "lag": 100, "oldest_pending_since": 2.5},  # jumped: deferred, not done
        {"updated_at": 9.0, "lag": 100, "oldest_pending_since": None},
        {"updated_at": 10.0, "lag": 50_000, "oldest_pending_since": None},  # fell behind again
        {"updated_at": 11.0, "lag": 10, "oldest_pending_since": None},
        {"updated_at": 12.0, "lag": 0, "oldest_pending_since": None},
    ]
    assert caught_up_at(statuses, lag_bound=1000) == 11.0
    assert caught_up_at(statuses[:4], lag_bound=1000) == 9.0
    assert caught_up_at(statuses[:5], lag_bound=1000) is None  # behind at the end
    assert caught_up_at(statuses[:3], lag_bound=1000) is None  # still deferred at the end
    assert caught_up_at(statuses[:1], lag_bound=1000) is None  # never behind: no catch-up to time


def test_completeness_holds_when_every_produced_seq_landed_once() -> None:
    expected = [stream("trades", "SIM1A001", 5), stream("reference", "SIM1A001", 1)]
    landed = {
        ("trades", "SIM", "SIM1A001", 20261203): Landed(rows=5, distinct=5, first=1, last=5),
        ("reference", "SIM", "SIM1A001", 20261203): Landed(rows=1, distinct=1, first=1, last=1),
    }
    check = completeness(expected, landed)
    assert check["exactly_once"] and check["expected"] == 6 and check["landed_rows"] == 6


def test_completeness_reports_missing_duplicated_and_unexpected_rows() -> None:
    expected = [stream("trades", "A", 5), stream("quotes", "A", 3), stream("quotes", "B", 2)]
    landed = {
        ("trades", "SIM", "A", 20261203): Landed(rows=5, distinct=4, first=1, last=5),  # 1 twice, 1 gone
        ("quotes", "SIM", "A", 20261203): Landed(rows=3, distinct=3, first=2, last=4),  # seq 4 not sent
        ("quotes", "SIM", "Z", 20261203): Landed(rows=7, distinct=7, first=1, last=7),  # not in the feed
    }
    check = completeness(expected, landed)
    assert not check["exactly_once"]
    assert check["duplicates"] == 1
    assert check["missing"] == 1 + 2  # trades A: one; quotes B: both (nothing landed)
    assert check["streams_out_of_range"] == 1
    assert check["unexpected_rows"] == 7


def test_completeness_refuses_a_feed_with_gaps() -> None:
    gappy = StreamRange(
        table="trades", exchange="SIM", symbol="A", session=1, first_seq=1, last_seq=10, count=8
    )
    with pytest.raises(ValueError, match="gaps"):
        completeness([gappy], {})


def test_shed_cost_subtracts_the_bare_consume_cost_from_both() -> None:
    cost = shed_cost(kept_us=5.0, shed_us=1.5, bare_us=1.0)
    assert cost["ratio_total"] == 0.3
    assert cost["ratio_own"] == 0.125  # (1.5 - 1) / (5 - 1)
    assert (cost["own_kept_us"], cost["own_shed_us"]) == (4.0, 0.5)
    assert shed_cost(kept_us=1.0, shed_us=1.0, bare_us=1.0)["ratio_own"] is None


def test_summary_gives_spreads_per_scenario_and_mode_and_counts_targets_held() -> None:
    figures = [
        {"run": 1, "scenario": "catchup", "mode": "on", "tier1_p99_s": 0.8, "exactly_once": True},
        {"run": 2, "scenario": "catchup", "mode": "on", "tier1_p99_s": 1.4, "exactly_once": True},
        {"run": 3, "scenario": "catchup", "mode": "on", "tier1_p99_s": 0.9, "exactly_once": False},
        {"run": 1, "scenario": "catchup", "mode": "off", "tier1_p99_s": None, "exactly_once": True},
    ]
    on, off = summarize(figures)
    assert (on["scenario"], on["mode"], on["runs"]) == ("catchup", "on", 3)
    assert on["tier1_p99_s"] == {"median": 0.9, "min": 0.8, "max": 1.4}
    assert on["exactly_once"] == {"held": 2, "runs": 3}
    assert off["tier1_p99_s"] == {"median": None, "min": None, "max": None}
    assert spread([None, 2.0, 4.0]) == {"median": 3.0, "min": 2.0, "max": 4.0}
