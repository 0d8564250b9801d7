"""The demo's cost model: each term is its measured ratio times its list price, and a figure is
only ever computed from inputs that were measured (positive and finite)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from k2.demo.cost import AWS_US_EAST_1, Measured, Prices, cost_per_million

PRICES = Prices(vcpu_hour=0.036, storage_gb_month=0.02, put_per_1000=0.004, source="round numbers for a test")
# One CPU hour per 360 M messages, one KiB per message, one object per 1,000 rows.
RUN = Measured(
    messages=360_000_000, cpu_s=3600.0, wall_s=4000.0, parquet_bytes=2**30, rows=2**20, objects=2**20 // 1000
)


def test_each_term_is_its_ratio_times_its_price() -> None:
    cost = cost_per_million(RUN, PRICES)
    assert cost.cpu_us_per_message == pytest.approx(10.0)
    assert cost.compute == pytest.approx(1e6 * 1e-5 / 3600 * 0.036)  # 10 s of CPU per million
    assert cost.bytes_per_message == 1024
    assert cost.storage_month == pytest.approx(1e6 * 1024 / 2**30 * 0.02)
    assert cost.objects_per_million == pytest.approx(1e6 * (2**20 // 1000) / 2**20)
    assert cost.requests == pytest.approx(cost.objects_per_million / 1000 * 0.004)
    assert cost.total == pytest.approx(cost.compute + cost.requests + cost.storage_month)
    assert cost.to_dict()["total"] == cost.total


def test_twice_the_cpu_per_message_doubles_compute_and_nothing_else() -> None:
    one = cost_per_million(RUN, PRICES)
    two = cost_per_million(replace(RUN, cpu_s=RUN.cpu_s * 2), PRICES)
    assert two.compute == pytest.approx(2 * one.compute)
    assert (two.requests, two.storage_month) == (one.requests, one.storage_month)


def test_wall_time_is_recorded_but_not_priced() -> None:
    assert cost_per_million(replace(RUN, wall_s=1.0), PRICES) == cost_per_million(RUN, PRICES)


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": 0},
        {"cpu_s": 0.0},
        {"cpu_s": -1.0},
        {"cpu_s": math.nan},
        {"wall_s": math.inf},
        {"parquet_bytes": 0},
        {"rows": 0},
        {"objects": 0},
    ],
)
def test_unmeasured_inputs_are_refused_not_priced(bad: dict[str, Any]) -> None:
    measured = replace(RUN, **bad)
    (name,) = bad
    assert any(p.startswith(f"{name} =") for p in measured.problems())
    with pytest.raises(ValueError, match=name):
        cost_per_million(measured, PRICES)


def test_default_prices_are_the_stated_list_prices() -> None:
    assert AWS_US_EAST_1.vcpu_hour == pytest.approx(0.0408)  # m7g.large $0.0816/h over 2 vCPU
    assert (AWS_US_EAST_1.storage_gb_month, AWS_US_EAST_1.put_per_1000) == (0.023, 0.005)
    assert math.isfinite(cost_per_million(RUN).total) and cost_per_million(RUN).total > 0
