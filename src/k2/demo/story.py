"""``k2 demo``: the story runner. Each section narrates one claim and ends in checks.

A section is a function of the :class:`DemoContext`; it prints with the context's console and
records checks in its recorder. A section that raises records a failed check naming the error and
the story goes on (a later section that needs its result says so in a failed check of its own).
The run writes ``summary.json`` (every check, the outputs, timings) into the output folder and is
``ok`` only if no check failed; sections not built yet record ``skipped`` checks, never passes.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table

from k2.broker import LocalBroker
from k2.config import Settings
from k2.demo.checks import Check, CheckRecorder, Status
from k2.demo.context import DemoContext
from k2.demo.sections import costs, crash, landing, live, pending, positioning, quality, quant
from k2.demo.world import DemoOptions, demo_settings, free_port, is_demo_workdir, prepare_workdir

__all__ = ["SECTIONS", "Section", "run_demo"]


@dataclass(frozen=True)
class Section:
    number: int
    title: str
    run: Callable[[DemoContext], None]


SECTIONS: tuple[Section, ...] = (
    Section(1, "What k2 is, and what it is not", positioning.run),
    Section(2, "The real ASX week, replayed through Kafka into Iceberg", landing.run),
    Section(3, "Live before durable", live.run),
    Section(4, "Data quality: gaps, duplicates, late arrivals, poison", quality.run),
    Section(5, "Overload: shed, stay fresh, backfill", pending.overload),
    Section(6, "Crash: kill -9 mid-stream, exactly once after", crash.run),
    Section(7, "Questions a quant asks", quant.run),
    Section(8, "Cost per million messages", costs.run),
)

_MARK = {
    Status.PASSED: "[bold green]PASS[/]",
    Status.FAILED: "[bold red]FAIL[/]",
    Status.SKIPPED: "[yellow]SKIP[/]",
}


def run_demo(base: Settings, options: DemoOptions, console: Console) -> dict[str, Any]:
    """Run every section with ``options``; write and return the JSON summary."""
    started = time.time()
    run_id = uuid.uuid4().hex[:6]
    settings = demo_settings(base, options, run_id, free_port())
    if options.bootstrap is None and is_demo_workdir(options.workdir):
        # A broker an interrupted run left behind keeps its files open: stop it before the wipe.
        pid_file = settings.broker.state_dir / "broker.pid"
        if pid_file.exists():
            LocalBroker(settings.broker, settings.kafka).stop()
    prepare_workdir(options.workdir)
    options.out.mkdir(parents=True, exist_ok=True)
    checks = CheckRecorder()
    timings: dict[str, float] = {}
    with ExitStack() as resources:
        ctx = DemoContext(settings, options, console, checks, resources)
        for i, section in enumerate(SECTIONS):
            if options.interactive and i > 0:
                console.input("\n[dim]Enter for the next section…[/] ")
            console.print()
            console.print(Rule(f"[bold]{section.number}. {section.title}"))
            before = len(checks.checks)
            t0 = time.perf_counter()
            try:
                section.run(ctx)
            except Exception as e:  # one broken section must not hide what the others show
                checks.record(
                    section.number,
                    "section_ran",
                    f"section {section.number} ran to its end",
                    False,
                    f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc(limit=8),
                )
            timings[f"section_{section.number}_s"] = round(time.perf_counter() - t0, 2)
            for check in checks.checks[before:]:
                _print_check(console, check)
    elapsed = time.time() - started
    summary = {
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "elapsed_s": round(elapsed, 1),
        "mode": {"fast": options.fast, "interactive": options.interactive},
        "workdir": str(options.workdir.resolve()),
        "bootstrap": settings.kafka.bootstrap_servers,
        "timings": timings,
        "outputs": [str(p) for p in ctx.outputs],
        **checks.summary(),
    }
    path = options.out / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    console.print()
    console.print(Rule("[bold]Every claim, checked"))
    console.print(_summary_table(checks.checks))
    verdict = "[bold green]all checks passed[/]" if checks.ok else "[bold red]some checks FAILED[/]"
    console.print(
        Panel(
            f"{verdict}: {checks.count(Status.PASSED)} passed, {checks.count(Status.FAILED)} failed, "
            f"{checks.count(Status.SKIPPED)} skipped (not built yet) in {elapsed:.0f} s\n"
            f"summary: {path}\n" + "\n".join(f"output:  {p}" for p in ctx.outputs)
        )
    )
    return summary


def _print_check(console: Console, check: Check) -> None:
    console.print(f"  CHECK {_MARK[check.status]}  {check.claim}")
    if check.detail:
        console.print(f"         [dim]{check.detail}[/]")


def _summary_table(checks: list[Check]) -> Table:
    table = Table(show_lines=False)
    for col in ("§", "check", "claim", "result"):
        table.add_column(col)
    for c in checks:
        table.add_row(str(c.section), c.name, c.claim, _MARK[c.status])
    return table
