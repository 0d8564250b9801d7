"""Sections not built yet. Each says what it will show and records its check as skipped: the
summary must never count a claim as passed that this run did not test."""

from __future__ import annotations

from k2.demo.context import DemoContext

__all__ = ["cost", "crash", "data_quality", "overload"]


def _not_yet(ctx: DemoContext, section: int, name: str, claim: str, plan: str) -> None:
    ctx.console.print(f"[yellow]Not yet in the demo.[/] It will show: {plan}")
    ctx.checks.skip(section, name, claim, "not built yet")


def data_quality(ctx: DemoContext) -> None:
    _not_yet(
        ctx,
        4,
        "bad_input_accounted",
        "injected gaps, duplicates, late arrivals and poison are each accounted for exactly",
        "sequence_gaps opening and filling, the DLQ holding each bad message with its reason, "
        "counts equal to what was injected.",
    )


def overload(ctx: DemoContext) -> None:
    _not_yet(
        ctx,
        5,
        "degrades_never_loses",
        "under overload tier 1 stays fresh, the rest is deferred and backfilled to 100 %",
        "a backlog driving the level up, tier-1 vs tier-3 freshness side by side, recovery, "
        "backfill, completeness back to 100 %.",
    )


def crash(ctx: DemoContext) -> None:
    _not_yet(
        ctx,
        6,
        "exactly_once_after_kill",
        "kill -9 of ingest mid-stream loses and duplicates nothing",
        "ingest killed with SIGKILL mid-stream and restarted; counts and identities prove exactly once.",
    )


def cost(ctx: DemoContext) -> None:
    rate = ctx.ingest_rates.get("per_s")
    measured = f" (this run's ingest rate: {rate:,.0f} msg/s)" if rate else ""
    _not_yet(
        ctx,
        8,
        "cost_per_million",
        "the cost per million messages, from this run's measured throughput",
        f"the cost model's figure per million messages (object storage + compute){measured}.",
    )
