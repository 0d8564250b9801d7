"""Sections not built yet. Each says what it will show and records its check as skipped: the
summary must never count a claim as passed that this run did not test."""

from __future__ import annotations

from k2.demo.context import DemoContext

__all__ = ["overload"]


def _not_yet(ctx: DemoContext, section: int, name: str, claim: str, plan: str) -> None:
    ctx.console.print(f"[yellow]Not yet in the demo.[/] It will show: {plan}")
    ctx.checks.skip(section, name, claim, "not built yet")


def overload(ctx: DemoContext) -> None:
    _not_yet(
        ctx,
        5,
        "degrades_never_loses",
        "under overload tier 1 stays fresh, the rest is deferred and backfilled to 100 %",
        "a backlog driving the level up, tier-1 vs tier-3 freshness side by side, recovery, "
        "backfill, completeness back to 100 %.",
    )
