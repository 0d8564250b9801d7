"""Section 1: what k2 is, what it is not, and where it sits among the tools a lead already knows."""

from __future__ import annotations

from pathlib import Path

from rich.markdown import Markdown
from rich.table import Table

from k2.demo.context import DemoContext

__all__ = ["run"]

_PITCH = """\
**k2** lands exchange trades, quotes and reference data from **Kafka** into **Apache Iceberg**,
*exactly once*, and answers queries over **live ∪ history** as one table, through a REST API and
sandboxed SQL. It is built for **research and compliance**: every message is accounted for (stored,
counted as a duplicate, or in the dead-letter topic with its reason), every sequence gap is
recorded, and every answer says what it covers.

It is **not** an execution path: answers come in milliseconds, not microseconds, and nothing
here sits between a strategy and an exchange.
"""

# (what, kdb+ tick, Iceberg Kafka Connect sink, a Flink/Spark job, k2)
_ROWS: tuple[tuple[str, str, str, str, str], ...] = (
    ("storage", "kdb+ files, proprietary", "Iceberg (open)", "Iceberg (open)", "Iceberg (open)"),
    (
        "live + history in one query",
        "yes (RDB + HDB via gateway)",
        "no: history only",
        "no: history only",
        "yes: buffers ∪ one snapshot, by Kafka offset",
    ),
    (
        "exactly once into the table",
        "n/a (tickerplant log)",
        "yes (connector offsets)",
        "yes (checkpoints)",
        "yes (offsets in the snapshot)",
    ),
    (
        "sequence gaps, duplicates, DLQ",
        "write it yourself",
        "DLQ only",
        "write it yourself",
        "built in, with exact counts",
    ),
    ("sheds load by symbol tier", "no", "no", "write it yourself", "yes, then backfills"),
    (
        "latency to query",
        "microseconds",
        "minutes (commit interval)",
        "seconds to minutes",
        "sub-second (live buffer)",
    ),
    ("runs on", "licensed q processes", "a Connect cluster", "a Flink/Spark cluster", "Python processes"),
    (
        "better at",
        "speed, q, decades in production",
        "zero code, many sinks",
        "any transformation",
        "market-data semantics on open formats",
    ),
)


def run(ctx: DemoContext) -> None:
    ctx.console.print(Markdown(_PITCH))
    table = Table(title="Where k2 sits", show_lines=True)
    for col in ("", "kdb+ tick", "Iceberg Kafka Connect sink", "Flink / Spark job", "k2"):
        table.add_column(col, style="bold" if col == "k2" else None)
    for row in _ROWS:
        table.add_row(*row)
    ctx.console.print(table)

    # The one claim this section makes about the run itself: it plays in a world of its own.
    s, work = ctx.settings, ctx.options.workdir.resolve()
    places = {
        "warehouse": Path(s.iceberg.warehouse),
        "status files": s.ingest.status_dir,
        "broker data": s.broker.state_dir,
    }
    outside = [name for name, p in places.items() if not Path(p).resolve().is_relative_to(work)]
    topics = s.kafka.topics.all()
    foreign = [t for t in topics if not t.startswith("demo-")]
    ctx.console.print(
        f"This run keeps its data in [bold]{work}[/] and uses its own topics "
        f"([bold]{s.kafka.topics.trades}[/], …) on [bold]{s.kafka.bootstrap_servers}[/]."
    )
    ctx.checks.record(
        1,
        "isolated",
        "the demo reads and writes only its own work dir and topics, never your data",
        not outside and not foreign and s.iceberg.type == "sql",
        f"outside the work dir: {outside or 'nothing'}; topics: {', '.join(topics)}",
        workdir=str(work),
        topics=topics,
    )
