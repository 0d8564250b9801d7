"""The pure parts of ``k2 bench query``: latency summaries, window rates and target verdicts."""

from __future__ import annotations

from k2.bench.query import TARGETS, Target, evaluate, latency_summary, summarize_runs, window_rate


def test_latency_summary_uses_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms

    s = latency_summary(values)

    assert s == {"n": 100, "p50": 50.0, "p99": 99.0, "min": 1.0, "max": 100.0, "mean": 50.5}


def test_latency_summary_of_one_sample_is_that_sample() -> None:
    assert latency_summary([7.25])["p99"] == 7.25


def test_latency_summary_of_nothing_reports_no_figures() -> None:
    assert latency_summary([]) == {"n": 0, "p50": None, "p99": None, "min": None, "max": None, "mean": None}


def test_window_rate_spans_the_first_and_last_status_inside_the_window() -> None:
    samples = [(9.0, 0), (10.2, 1_000), (11.2, 3_000), (12.2, 5_000), (13.5, 9_000)]

    w = window_rate(samples, 10.0, 12.5)

    assert w == {"rows": 4_000, "seconds": 2.0, "rate": 2_000.0}


def test_window_rate_needs_two_statuses() -> None:
    assert window_rate([(10.5, 100)], 10.0, 11.0)["rate"] is None


def test_targets_are_met_at_the_bound_and_missed_past_it() -> None:
    figures = {
        "last100_p99_ms": 20.0,
        "bars_p99_ms": 50.01,
        "freshness_p50_ms": 99.0,
        "freshness_p99_ms": None,
        "ingest_ratio_4_clients": 0.9,
    }

    verdict = {k: v["met"] for k, v in evaluate(figures).items()}

    assert verdict == {
        "last100_p99_ms": True,
        "bars_p99_ms": False,
        "freshness_p50_ms": True,
        "freshness_p99_ms": None,  # not measured is not a pass
        "ingest_ratio_4_clients": True,
    }


def test_ingest_ratio_below_point_nine_misses() -> None:
    assert Target("ingest_ratio_4_clients", ">=", 0.9).met(0.89) is False
    assert {t.figure for t in TARGETS} >= {"last100_p99_ms", "bars_p99_ms", "ingest_ratio_4_clients"}


def test_summary_gives_median_and_range_and_counts_runs_that_held() -> None:
    runs = [
        {"run": 1, "last100_p99_ms": 12.0, "bars_p99_ms": 40.0},
        {"run": 2, "last100_p99_ms": 30.0, "bars_p99_ms": 45.0},
        {"run": 3, "last100_p99_ms": 18.0, "bars_p99_ms": 60.0},
    ]

    s = summarize_runs(runs)

    assert s["runs"] == 3
    assert s["figures"]["last100_p99_ms"] == {"median": 18.0, "min": 12.0, "max": 30.0}
    assert s["targets"]["last100_p99_ms"]["met_by_median"] is True
    assert s["targets"]["last100_p99_ms"]["held"] == 2
    assert s["targets"]["bars_p99_ms"]["held"] == 2
    assert s["targets"]["freshness_p99_ms"]["met_by_median"] is None
