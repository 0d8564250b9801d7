"""Section 8: cost per million messages, priced from this run's own measurements.

Throughput: section 2's ingest of the real ASX week (messages landed, and the CPU seconds the
demo process spent while ingest ran in it). Bytes per message: the Parquet data files the market
tables hold now, divided by their rows. Objects per message: every file in the warehouse (data,
manifests, metadata; each at least one PUT on object storage) divided by the same rows. The
prices and the arithmetic are in :mod:`k2.demo.cost`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from k2.demo.context import DemoContext
from k2.demo.cost import AWS_US_EAST_1, FORMULA, Measured, cost_per_million
from k2.demo.readback import count_files, warehouse_footprint
from k2.lake import TABLE_FOR_STREAM

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    s, console = ctx.settings, ctx.console
    rates = ctx.ingest_rates
    if not ctx.landed or not rates:
        ctx.checks.record(
            8, "cost_per_million", "cost per million messages", False, "not run: section 2 measured no ingest"
        )
        return
    parquet_bytes, rows = warehouse_footprint(s, tuple(TABLE_FOR_STREAM.values()))
    measured = Measured(
        messages=int(rates["messages"]),
        cpu_s=float(rates["cpu_s"]),
        wall_s=float(rates["seconds"]),
        parquet_bytes=parquet_bytes,
        rows=rows,
        objects=count_files(Path(s.iceberg.warehouse)),
    )
    if problems := measured.problems():
        ctx.checks.record(
            8,
            "cost_per_million",
            "the cost per million messages is computed from this run's measured throughput and bytes",
            False,
            f"inputs not measured: {', '.join(problems)}",
            inputs=asdict(measured),
        )
        return
    cost = cost_per_million(measured)
    p = AWS_US_EAST_1
    console.print(f"Prices: {p.source}.")
    console.print(f"[dim]{FORMULA}[/]")
    table = Table(title="Cost per million messages landed (USD), from this run's measurements")
    for col in ("term", "measured", "price", "USD per 1M"):
        table.add_column(col, justify="left" if col == "term" else "right")
    table.add_row(
        "compute (ingest)",
        f"{cost.cpu_us_per_message:,.1f} CPU µs/msg ({measured.messages:,} msgs, {measured.cpu_s:.1f} CPU s)",
        f"${p.vcpu_hour:.4f}/vCPU-h",
        f"${cost.compute:.5f}",
    )
    table.add_row(
        "PUT requests",
        f"{cost.objects_per_million:,.1f} objects per 1M rows ({measured.objects:,} files)",
        f"${p.put_per_1000:.3f}/1000",
        f"${cost.requests:.5f}",
    )
    table.add_row(
        "storage, first month",
        f"{cost.bytes_per_message:,.1f} bytes/msg ({measured.parquet_bytes / 2**20:,.1f} MiB Parquet, "
        f"{measured.rows:,} rows)",
        f"${p.storage_gb_month:.3f}/GB-month",
        f"${cost.storage_month:.5f}",
    )
    table.add_section()
    table.add_row("[bold]total[/]", "", "", f"[bold]${cost.total:.5f}[/]")
    table.caption = (
        "Not included: the Kafka cluster, network transfer, query compute, storage after the first "
        "month. This run's commits are small (the demo commits often to show time travel), so PUTs "
        "per message are higher here than with the default commit cadence."
    )
    console.print(table)
    console.print(
        f"Cost per million messages: [bold]${cost.total:.4f}[/] "
        f"(so ${cost.total * 1000:.2f} per billion); one ingest vCPU lands "
        f"{3600 / (cost.cpu_us_per_message / 1e6) / 1e6:,.0f} M messages an hour."
    )
    figures = cost.to_dict()
    ok = all(math.isfinite(v) and v > 0 for v in figures.values())
    ctx.checks.record(
        8,
        "cost_per_million",
        "the cost per million messages is computed from this run's measured throughput and bytes",
        ok,
        f"${cost.total:.5f} per 1M messages from {measured.messages:,} messages in "
        f"{measured.cpu_s:.1f} CPU s, and {measured.parquet_bytes:,} Parquet bytes over "
        f"{measured.rows:,} rows",
        inputs=asdict(measured),
        prices=asdict(p),
        cost=figures,
        formula=FORMULA,
    )
