"""Section 4: data quality. A simulated market with gaps, duplicates, late arrivals (two
neighbours swapped) and poison, ingested; every fault is then found where k2 says it goes, in the
number injected.

The simulator's report is the ground truth: the valid unique set, each gap's seq range, each
reorder, each duplicate, each poison message's topic, kind and size. The readings are
independent of ingest: a fresh catalog scan of the tables and ``sequence_gaps``, and a plain
consumer on the DLQ topic. The rules checked (those of ``tests/integration/
test_ingest_simulated_faults.py``): the tables hold exactly the valid unique set, each once;
``sequence_gaps`` holds exactly the injected gaps as ``open`` and, as ``filled``, the one-seq gap
each late arrival opened and then closed; the DLQ holds each poison message once, with its reason.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from rich.table import Table

from k2.demo.context import DemoContext
from k2.demo.readback import DeadLetterRead, gap_ranges, landed_identities, read_dead_letters
from k2.demo.services import BackgroundIngest
from k2.feeds.report import FeedReport
from k2.feeds.simulator import SimulatorConfig, simulate

__all__ = ["run", "utc_session"]

EXCHANGE = "SIM"
_INGEST_TIMEOUT_S = 300.0


def utc_session(days_ahead: int = 0) -> int:
    """Today's UTC date (plus ``days_ahead``) as a ``YYYYMMDD`` session number."""
    d = datetime.now(UTC).date() + timedelta(days=days_ahead)
    return d.year * 10_000 + d.month * 100 + d.day


def run(ctx: DemoContext) -> None:
    if ctx.kafka is None:
        ctx.checks.record(
            4, "valid_landed_once", "data quality", False, "not run: section 2 did not start Kafka"
        )
        return
    s, console = ctx.settings, ctx.console
    session = utc_session()
    config = SimulatorConfig(
        seed=4,
        tier1=5,
        tier2=15,
        tier3=30,
        messages=30_000 if ctx.options.fast else 120_000,
        rate=0,
        gap_rate=0.01,
        duplicate_rate=0.01,
        reorder_rate=0.01,
        poison_rate=0.005,
        session=session,
        exchange=EXCHANGE,
    )
    console.print(
        f"The simulator produces {config.messages:,} market events for "
        f"{config.tier1 + config.tier2 + config.tier3} symbols (exchange {EXCHANGE}, session {session}) "
        "and injects, per event: 1 % gaps, "
        "1 % duplicates, 1 % late arrivals, 0.5 % poison. Its report says exactly what it did."
    )
    report = simulate(s, config, progress=True)
    console.print(report)

    ingest = BackgroundIngest(s, writer_id="demo-quality", exit_when_idle=2.0, max_seconds=_INGEST_TIMEOUT_S)
    ctx.resources.callback(lambda: ingest.running and ingest.stop())
    with console.status("ingesting the faulty feed …"):
        ingest.start()
        result = ingest.join(timeout=_INGEST_TIMEOUT_S + 30)
    console.print(
        f"Ingest consumed {result.consumed:,}: landed {sum(result.landed.values()):,} rows, "
        f"dropped {result.duplicates:,} duplicates, rejected {sum(result.rejected.values()):,} "
        f"to the DLQ ({result.exit_reason} after {result.seconds:.1f} s)."
    )

    landed = landed_identities(s, EXCHANGE, session)
    gaps = gap_ranges(s, EXCHANGE, session)
    letters = read_dead_letters(s, len(report.poison))
    _check(ctx, report, session, result.duplicates, landed, gaps, letters)


def _check(
    ctx: DemoContext,
    report: FeedReport,
    session: int,
    dropped: int,
    landed: list[tuple[str, str, str, int, int]],
    gaps: dict[str, set[tuple[str, str, str, int, int, int]]],
    letters: list[DeadLetterRead],
) -> None:
    console, checks = ctx.console, ctx.checks
    valid = report.valid_keys()
    twice = sum(n - 1 for n in Counter(landed).values() if n > 1)
    missing, extra = len(valid - set(landed)), len(set(landed) - valid)
    injected_gaps = {(g.table, g.exchange, g.symbol, g.session, g.first_seq, g.last_seq) for g in report.gaps}
    late = {(o.table, o.exchange, o.symbol, o.session, o.first_seq, o.first_seq) for o in report.reorders}
    open_, filled, lost = gaps.get("open", set()), gaps.get("filled", set()), gaps.get("lost", set())
    sources = Counter(letter.source for letter in letters)

    table = Table(title=f"Injected vs found (exchange {EXCHANGE}, session {session})")
    for col in ("fault", "injected", "found", "where k2 puts it"):
        table.add_column(col, justify="left" if col in ("fault", "where k2 puts it") else "right")

    def mark(a: int, b: int, same: bool = True) -> str:
        return f"{b:,} [green]✓[/]" if a == b and same else f"[red]{b:,}[/]"

    table.add_row(
        "valid messages", f"{len(valid):,}", mark(len(valid), len(landed), not twice), "the tables, once each"
    )
    table.add_row(
        "gaps (missing seqs)",
        f"{len(injected_gaps):,}",
        mark(len(injected_gaps), len(open_), open_ == injected_gaps),
        "sequence_gaps, status open",
    )
    table.add_row(
        "late arrivals",
        f"{len(late):,}",
        mark(len(late), len(filled), filled == late),
        "sequence_gaps, status filled (the gap each opened, then closed)",
    )
    table.add_row(
        "duplicates",
        f"{len(report.duplicates):,}",
        mark(len(report.duplicates), dropped, not twice),
        f"counted and dropped by dedup; identities landed twice: {twice}",
    )
    table.add_row(
        "poison",
        f"{len(report.poison):,}",
        mark(len(report.poison), len(letters)),
        "the DLQ topic, with k2.reason",
    )
    console.print(table)
    console.print(_poison_table(report, letters))

    checks.record(
        4,
        "valid_landed_once",
        "the tables hold exactly the valid messages the feed produced, each once",
        not twice and not missing and not extra and len(landed) == len(valid),
        f"{len(valid):,} valid produced, {len(landed):,} rows landed: {missing} missing, {extra} unknown, "
        f"{twice} twice",
        valid=len(valid),
        landed=len(landed),
        missing=missing,
        extra=extra,
        twice=twice,
    )
    checks.record(
        4,
        "duplicates_dropped",
        "every injected duplicate was counted by dedup and none landed",
        dropped == len(report.duplicates) and not twice,
        f"{len(report.duplicates):,} injected, {dropped:,} counted as duplicates, {twice} landed twice",
        injected=len(report.duplicates),
        counted=dropped,
    )
    checks.record(
        4,
        "gaps_open_and_fill",
        "sequence_gaps holds exactly the injected gaps as open, and each late arrival's gap as filled",
        open_ == injected_gaps and filled == late and not lost,
        f"open {len(open_):,} (injected {len(injected_gaps):,}, {len(open_ ^ injected_gaps)} differ); "
        f"filled {len(filled):,} (late arrivals {len(late):,}, {len(filled ^ late)} differ); "
        f"lost {len(lost)}",
        injected_gaps=len(injected_gaps),
        open=len(open_),
        late_arrivals=len(late),
        filled=len(filled),
        lost=len(lost),
    )
    by_topic_ok = Counter(letter.headers.get("k2.source.topic") for letter in letters) == Counter(
        p.topic for p in report.poison
    )
    sizes_ok = sorted(letter.value_len for letter in letters) == sorted(p.bytes_len for p in report.poison)
    unreasoned = [
        letter.source
        for letter in letters
        if not letter.headers.get("k2.reason")
        or letter.headers.get("k2.stage") not in ("decode", "validate")
        or not letter.headers.get("k2.exception")
    ]
    checks.record(
        4,
        "dlq_holds_poison",
        "the DLQ holds each poison message once (same topic, same bytes) with the reason it was refused",
        len(letters) == len(report.poison)
        and by_topic_ok
        and sizes_ok
        and not unreasoned
        and len(sources) == len(letters),
        f"{len(report.poison)} injected ({len(report.poison_by_kind)} kinds), {len(letters)} in the DLQ, "
        f"{len(letters) - len(sources)} read twice; topics {'match' if by_topic_ok else 'DIFFER'}, "
        f"sizes {'match' if sizes_ok else 'DIFFER'}; {len(unreasoned)} without reason/stage",
        injected=len(report.poison),
        dead_letters=len(letters),
        reasons=dict(Counter(letter.headers.get("k2.reason", "") for letter in letters)),
    )


def _poison_table(report: FeedReport, letters: list[DeadLetterRead]) -> Table:
    """The kinds injected beside the reasons the DLQ gives. Not paired row by row: one kind can be
    refused under more than one rule name (``non_finite``: ``price_not_finite`` on a trade,
    ``ask_not_finite`` on a quote), so only the totals must agree."""
    reasons = Counter(letter.headers.get("k2.reason", "") for letter in letters)
    kinds = sorted(report.poison_by_kind.items())
    table = Table(title="Poison: kinds injected, and the k2.reason of each record in the DLQ")
    for col in ("kind injected", "n", "k2.reason in the DLQ", "found"):
        table.add_column(col, justify="right" if col in ("n", "found") else "left")
    for i in range(max(len(kinds), len(reasons))):
        kind, n = kinds[i] if i < len(kinds) else ("", 0)
        reason, found = sorted(reasons.items())[i] if i < len(reasons) else ("", 0)
        table.add_row(kind, f"{n:,}" if kind else "", reason, f"{found:,}" if reason else "")
    table.add_section()
    total, got = len(report.poison), len(letters)
    table.add_row("total", f"{total:,}", "", f"{got:,} [green]✓[/]" if got == total else f"[red]{got:,}[/]")
    return table
