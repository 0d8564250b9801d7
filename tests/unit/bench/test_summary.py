"""The bench summary: medians and ranges per scenario, each ratio taken within its own run."""

from __future__ import annotations

from k2.bench.ingest import summarize


def run(name: str, procs: int, e2e: float, ceiling: float, rss: float) -> dict[str, object]:
    return {
        "name": name,
        "processes": procs,
        "e2e_rate": e2e,
        "drain_rate": e2e * 1.5,
        "ceiling_rate": ceiling,
        "e2e_ratio": round(e2e / ceiling, 3),
        "drain_ratio": round(e2e * 1.5 / ceiling, 3),
        "ingest_peak_rss_mb": rss,
    }


def test_summary_groups_by_scenario_and_process_count() -> None:
    runs = [
        run("sim", 1, 200.0, 400.0, 900.0),
        run("sim", 1, 300.0, 500.0, 1000.0),
        run("sim", 1, 250.0, 450.0, 950.0),
        run("sim", 2, 100.0, 400.0, 800.0),
    ]
    summary = {(s["name"], s["processes"]): s for s in summarize(runs)}  # type: ignore[arg-type]
    one = summary[("sim", 1)]
    assert one["runs"] == 3
    assert one["e2e_rate"] == {"median": 250.0, "min": 200.0, "max": 300.0}
    # The median of the per-run ratios (0.5, 0.6, 0.556), not a ratio of medians.
    assert one["e2e_ratio"] == {"median": 0.556, "min": 0.5, "max": 0.6}
    assert one["ingest_peak_rss_mb"] == 1000.0
    assert summary[("sim", 2)]["runs"] == 1
