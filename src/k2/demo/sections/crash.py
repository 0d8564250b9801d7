"""Section 6: crash. ``k2 ingest`` runs as a child process while a simulated feed streams in, and
is killed with SIGKILL mid-stream, more than once; a last process drains what is left. Every
message of the feed must then be in Iceberg exactly once: counted, and identity by identity.

Each killed process is given time to commit once (so the kill hits a process in full flow: rows
in its buffer, a commit due every half second), then a random fraction of a second more. Why
nothing is lost or doubled: the Kafka offsets a commit covers are stored in the same Iceberg
commit as its rows, and a restarted process resumes from them, not from the consumer group's
offsets. A short session timeout lets the group hand a dead member's partitions on quickly.
The feed has a session of its own, so its identities are told apart from the rest of the demo's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from pyiceberg.exceptions import NoSuchTableError
from rich.table import Table

from k2.config import Settings, settings_env
from k2.demo.context import DemoContext
from k2.demo.readback import gap_ranges, landed_identities
from k2.demo.sections.quality import EXCHANGE, utc_session
from k2.demo.services import wait_until
from k2.feeds.report import FeedReport
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.ingest import IngestReport
from k2.ingest.status import read_statuses
from k2.lake import TABLE_FOR_STREAM, open_catalog

__all__ = ["run"]

_RATE = 4_000  # market events per second: the feed outlasts the kills and restarts
_DRAIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class _Kill:
    n: int
    pid: int
    at_s: float  # since the feed started
    committed: int  # rows of this feed in Iceberg when it was killed
    buffered: int | None  # rows in its buffer, by its last status file (about a second old)
    lag: int | None
    feed_running: bool

    @property
    def mid_stream(self) -> bool:
        """Unlanded data existed at the kill: the feed was still producing, or rows were waiting."""
        return self.feed_running or bool(self.buffered) or bool(self.lag)


def run(ctx: DemoContext) -> None:
    if ctx.kafka is None:
        ctx.checks.record(
            6, "exactly_once_after_kill", "crash", False, "not run: section 2 did not start Kafka"
        )
        return
    s, console = ctx.settings, ctx.console
    kills = 2 if ctx.options.fast else 3
    session = utc_session(1)  # section 4 simulates today's session
    crash = _crash_settings(s, ctx.options.workdir.resolve())
    config = SimulatorConfig(
        seed=6,
        tier1=5,
        tier2=10,
        tier3=20,
        messages=80_000 if ctx.options.fast else 200_000,
        rate=_RATE,
        gap_rate=0.002,
        duplicate_rate=0.005,
        session=session,
        exchange=EXCHANGE,
    )
    log = ctx.options.workdir / "crash-ingest.log"
    console.print(
        f"A feed of {config.messages:,} events at {_RATE:,}/s (session {session}); `k2 ingest` runs as "
        f"a child process, committing every {crash.ingest.flush_seconds:g} s or {crash.ingest.flush_rows:,} "
        f"rows, and is killed with SIGKILL {kills} times mid-stream. Its log: {log}"
    )
    baseline = _committed_rows(crash)
    produced: list[FeedReport] = []
    feed = threading.Thread(
        target=lambda: produced.append(simulate(s, config, progress=False)),
        name="demo-crash-feed",
        daemon=True,
    )
    rng = random.Random(20140310)
    done: list[_Kill] = []
    feed.start()
    t0 = time.monotonic()
    with console.status("") as status:
        for n in range(1, kills + 1):
            writer = f"demo-crash-{n}"
            proc = _start_ingest(crash, log, "--writer-id", writer)
            ctx.resources.callback(_reap, proc)
            status.update(f"ingest #{n} (pid {proc.pid}) started; waiting for its first commit …")
            before = _snapshots(crash)
            wait_until(
                f"ingest #{n} to commit",
                partial(_committed_since, crash, before, proc, log),
                timeout=120.0,
                every=0.1,
            )
            time.sleep(rng.uniform(0.2, 1.0))
            last = next((st for st in read_statuses(crash.ingest.status_dir) if st.writer == writer), None)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kill = _Kill(
                n=n,
                pid=proc.pid,
                at_s=time.monotonic() - t0,
                committed=_committed_rows(crash) - baseline,
                buffered=last.buffer_rows if last else None,
                lag=last.lag if last else None,
                feed_running=feed.is_alive(),
            )
            done.append(kill)
            console.print(
                f"  kill -9 #{n}: pid {kill.pid} at {kill.at_s:.1f} s, {kill.committed:,} rows committed, "
                f"{kill.buffered if kill.buffered is not None else '?'} buffered, "
                f"feed {'still producing' if kill.feed_running else 'done'}"
            )
        status.update("the feed finishes …")
        feed.join(timeout=300.0)
        if not produced:
            raise RuntimeError("the simulator did not finish within 300 s")
        status.update("a last ingest process drains the rest (--exit-when-idle 2) …")
        report_path = ctx.options.workdir / "crash-final-report.json"
        final = _start_ingest(
            crash,
            log,
            "--writer-id",
            "demo-crash-final",
            "--exit-when-idle",
            "2",
            "--max-seconds",
            str(_DRAIN_TIMEOUT_S),
            "--report",
            str(report_path),
        )
        ctx.resources.callback(_reap, final)
        code = final.wait(timeout=_DRAIN_TIMEOUT_S + 60)
    drained = IngestReport.from_json(report_path.read_text()) if report_path.exists() else None
    if drained is not None:
        console.print(
            f"The last process (exit {code}) resumed from the offsets stored with the last commit: consumed "
            f"{drained.consumed:,}, landed {sum(drained.landed.values()):,} rows in {drained.commits} "
            f"commit(s), {drained.seconds:.1f} s."
        )
    _check(ctx, produced[0], session, done, code, log)


def _check(
    ctx: DemoContext, report: FeedReport, session: int, kills: list[_Kill], code: int, log: Path
) -> None:
    s, console = ctx.settings, ctx.console
    console.print(_kills_table(kills))
    landed = landed_identities(s, EXCHANGE, session)
    valid = report.valid_keys()
    distinct = set(landed)
    twice = sum(n - 1 for n in Counter(landed).values() if n > 1)
    missing, extra = len(valid - distinct), len(distinct - valid)
    table = Table(title=f"After {len(kills)} kills: the feed against Iceberg, identity by identity")
    for col in ("valid messages produced", "rows landed", "distinct identities", "missing", "landed twice"):
        table.add_column(col, justify="right")
    good = "[green]0 ✓[/]"
    table.add_row(
        f"{len(valid):,}",
        f"{len(landed):,}",
        f"{len(distinct):,}",
        good if not missing else f"[red]{missing:,}[/]",
        good if not twice else f"[red]{twice:,}[/]",
    )
    console.print(table)
    mid_stream = len(kills) > 0 and all(k.mid_stream for k in kills)
    ctx.checks.record(
        6,
        "exactly_once_after_kill",
        f"after {len(kills)} kill -9 of ingest mid-stream, every message of the feed landed exactly once",
        mid_stream and code == 0 and distinct == valid and not twice and len(landed) == len(valid),
        f"{len(valid):,} valid produced, {len(landed):,} rows landed: {missing} missing, {extra} unknown, "
        f"{twice} twice; kills mid-stream: {sum(k.mid_stream for k in kills)}/{len(kills)}; last process "
        f"exited {code}" + ("" if code == 0 else f" (log: {log})"),
        valid=len(valid),
        landed=len(landed),
        missing=missing,
        extra=extra,
        twice=twice,
        kills=[asdict(k) | {"mid_stream": k.mid_stream} for k in kills],
        final_exit_code=code,
    )
    gaps = gap_ranges(s, EXCHANGE, session)
    injected = {(g.table, g.exchange, g.symbol, g.session, g.first_seq, g.last_seq) for g in report.gaps}
    open_ = gaps.get("open", set())
    others = {status: len(rows) for status, rows in gaps.items() if status != "open"}
    ctx.checks.record(
        6,
        "no_false_gaps_after_kill",
        "the restarts opened no false gaps: sequence_gaps holds exactly the feed's injected gaps",
        open_ == injected and not others,
        f"{len(injected)} injected, {len(open_)} open, {len(open_ ^ injected)} differ; "
        f"other statuses {others}",
        injected=len(injected),
        open=len(open_),
    )


def _crash_settings(s: Settings, workdir: Path) -> Settings:
    # Small, frequent commits, so a kill finds rows buffered and a commit close; a short session
    # timeout (the broker's minimum) so the group notices a dead member in seconds. Status files
    # of their own: the API of section 3 must not look for the killed processes' live buffers.
    ingest = s.ingest.model_copy(
        update={"flush_rows": 4_000, "flush_seconds": 0.5, "status_dir": workdir / "status-crash"}
    )
    properties = {**s.kafka.client_properties, "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    kafka = s.kafka.model_copy(update={"client_properties": properties})
    return s.model_copy(update={"ingest": ingest, "kafka": kafka})


def _start_ingest(s: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``k2 ingest`` in a child process, its log appended to ``log`` (a pipe nobody reads would block)."""
    env = {**os.environ, **settings_env(s), "K2_LOG__FORMAT": "json"}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "ingest", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _snapshots(s: Settings) -> int:
    catalog = open_catalog(s.iceberg)
    try:
        return sum(
            len(catalog.load_table((s.iceberg.namespace, t)).metadata.snapshots)
            for t in TABLE_FOR_STREAM.values()
        )
    except NoSuchTableError:
        return 0


def _committed_rows(s: Settings) -> int:
    """Rows in the market tables' current snapshots (the feed's = this minus the count before it)."""
    catalog = open_catalog(s.iceberg)
    total = 0
    for name in TABLE_FOR_STREAM.values():
        snap = catalog.load_table((s.iceberg.namespace, name)).current_snapshot()
        if snap is not None and snap.summary is not None:
            total += int(snap.summary["total-records"] or 0)
    return total


def _committed_since(s: Settings, before: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(
            f"ingest exited with {proc.returncode} before committing: {log.read_text()[-2000:]}"
        )
    return _snapshots(s) > before


def _kills_table(kills: list[_Kill]) -> Table:
    table = Table(title="Each kill -9")
    for col in ("#", "pid", "at (s into the feed)", "rows committed by then", "rows buffered", "feed"):
        table.add_column(col, justify="right" if col != "feed" else "left")
    for k in kills:
        table.add_row(
            str(k.n),
            str(k.pid),
            f"{k.at_s:.1f}",
            f"{k.committed:,}",
            "?" if k.buffered is None else f"{k.buffered:,}",
            "still producing" if k.feed_running else "done",
        )
    return table
