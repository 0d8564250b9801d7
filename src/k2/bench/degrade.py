"""``k2 bench degrade``: ingest under overload this machine can really produce, degradation on vs off.

Every scenario runs on fresh topics and a fresh warehouse, with degradation on (the configured
defaults) and off (``degradation.enabled = false``) in the same run, from the same rendered feed:

- **cpu**: one rendered backlog drained three ways. Ingest keeping everything (degradation off):
  its rows ÷ (last commit - first batch) is the *sustainable rate* the other scenarios' feeds are
  a fraction of (unless given). Ingest shedding everything (memory budget 1 byte, so the level is
  CIRCUIT_BREAK before the first batch; no backlog jump; no tier files, so every symbol is tier 3
  and nothing is kept). A bare ``consume`` loop in its own process. Each gives CPU seconds per
  message; the ingest loop's own cost is ingest minus bare, and shed ÷ kept of that is the ratio.
- **catch-up**: ingest is down while the feed puts a backlog on Kafka, flat out; then ingest
  starts and the feed goes on live, paced at 30 % of the sustainable rate, for ``catchup_s``.
- **slow storage**: the feed runs live at 70 % of the sustainable rate for ``slow_s`` while every
  commit first sleeps ``commit_delay_s`` (``ingest.debug_commit_delay_s``), with a small
  ``degradation.memory_budget_bytes``.

The feeds are rendered to bytes before their clock starts (as ``k2 bench ingest`` does), so the
load generator's own CPU stays off the two cores the broker and ingest share. A catch-up feed is
one simulator run: the live part continues the backlog's sequence numbers, so a deferred backlog
is a real gap that the backfill must fill.

Ingest runs as ``k2 ingest`` in a child process at its production cadence: not with
``--exit-when-idle``, which commits whenever ingest catches up (about every second with a live
feed, and those commits slowed tier-1 freshness to 1-3 s here). Once the feed has ended and the
status file shows lag 0 and nothing deferred, the bench stops it with SIGTERM (it commits, then
exits). If that does not happen (the level stays above SOFT, where nothing is backfilled, or
the settle time runs out), it is stopped anyway and ``k2 backfill`` finishes the deferred work,
so completeness is still checked, and the run is marked as not complete on its own.

Measured per run: tier-1 freshness (Kafka create time → row in the live buffer, sampled by ingest
itself, see ``k2.ingest.freshness``) p50/p99 from ``t0 + 10 s`` and per 5 s window, ``t0`` being
the start of the ingest process; the level timeline; rows shed and backfilled per class; when
ingest caught up for good (status file: nothing deferred and lag under one second of feed) and
when it was done after the feed ended; RSS sampled every 0.1 s and ingest's own peak (``VmHWM``)
against the budget; commits, pauses and backlog jumps from its log; and completeness read back
from Iceberg against the feed's report.

Completeness is compared per stream ``(table, exchange, symbol, session)``: the feed injects no
faults, so its valid set is every seq in ``first_seq..last_seq``, and the landed rows match it
exactly when their distinct seqs number ``last - first + 1``, lie in that range, and no seq
appears twice. That is ``FeedReport.valid_keys()`` compared as a set, without building a set of
ten million tuples.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from k2.bench.harness import broker_process, child_env, cpu_seconds
from k2.broker.topics import delete_topics, ensure_k2_topics
from k2.config import Settings, TopicNames
from k2.degradation import Level
from k2.feeds.producer import FeedProducer
from k2.feeds.report import FeedReport, StreamRange
from k2.feeds.simulator import Simulation, SimulatorConfig, simulate
from k2.ingest.consumer import consumer_config
from k2.ingest.process import freeze_startup_heap
from k2.lake import TABLE_FOR_STREAM, open_catalog

__all__ = [
    "Landed",
    "caught_up_at",
    "completeness",
    "freshness_stats",
    "freshness_windows",
    "level_at",
    "percentile",
    "run_degrade_bench",
    "shed_cost",
    "spread",
    "summarize",
    "time_above",
    "value_at",
]

Sample = tuple[float, str, float]  # (wall clock s, class, seconds from Kafka create time to the buffer)
StreamKey = tuple[str, str, str, int]  # (stream, exchange, symbol, session)

WINDOW_S = 5.0
WARMUP_S = 10.0  # the catch-up target counts tier-1 freshness from this long after ingest starts
FRESHNESS_TARGET_S = 1.0
SHED_COST_TARGET = 0.25
CATCHUP_FRACTION = 0.3
SLOW_FRACTION = 0.7
# The ingest report keeps the newest 50,000 freshness samples by default; a 90 s run takes about
# twice that, and the first seconds (the catch-up itself) matter most: the bench keeps them all.
_FRESHNESS_CAP = 2_000_000
_TIER1 = "tier1"
# After the feed ends, how long ingest may take to step down and backfill before it is stopped
# (four cooldowns of 30 s, then the backfill). A stopped run is finished by ``k2 backfill``.
_SETTLE_S = 360.0
# Stuck: this long after the feed ended, the level has not moved from above SOFT and nothing was
# backfilled (three cooldowns of the default 30 s: every step down would have happened by then).
_LATCHED_S = 90.0
_OFF_LABELS = "every sample is labelled tier1: with degradation off ingest has no shedder to classify"


# -- pure summaries (tested in tests/unit/bench/test_degrade_summary.py) -------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def freshness_stats(
    samples: Iterable[Sample], cls: str | None, since: float, until: float = math.inf
) -> dict[str, Any]:
    """Count, p50, p99 and max of the samples of class ``cls`` (None: all) taken in [since, until)."""
    values = [f for t, c, f in samples if since <= t < until and (cls is None or c == cls)]
    return _stats(values)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _round(percentile(values, 50)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values) if values else None),
    }


def freshness_windows(
    samples: Iterable[Sample], cls: str | None, t0: float, end: float, window_s: float = WINDOW_S
) -> list[dict[str, Any]]:
    """Per window ``[t0 + k·w, t0 + (k+1)·w)`` up to ``end``: its start (s after t0) and stats."""
    n = max(1, math.ceil((end - t0) / window_s))
    buckets: list[list[float]] = [[] for _ in range(n)]
    for t, c, f in samples:
        k = math.floor((t - t0) / window_s)
        if 0 <= k < n and (cls is None or c == cls):
            buckets[k].append(f)
    return [{"t": round(k * window_s, 3), **_stats(b)} for k, b in enumerate(buckets)]


def level_at(timeline: Sequence[tuple[float, int]], t: float) -> int:
    """The level in force at ``t`` given its transitions ``(at, level)`` in time order (NORMAL before)."""
    level = int(Level.NORMAL)
    for at, lv in timeline:
        if at > t:
            break
        level = int(lv)
    return level


def value_at(times: Sequence[float], values: Sequence[float], t: float) -> float:
    """``values`` linearly interpolated at ``t`` (clamped to the first and last sample)."""
    if not times:
        raise ValueError("no samples")
    return float(np.interp(t, times, values))


def time_above(times: Sequence[float], values: Sequence[float], bound: float) -> float:
    """Seconds during which samples were above ``bound`` (each sample holds until the next)."""
    return sum(b - a for a, b, v in zip(times, times[1:], values, strict=False) if v > bound)


def caught_up_at(statuses: Sequence[Mapping[str, Any]], lag_bound: float) -> float | None:
    """From when on ingest stayed caught up: nothing deferred and lag below ``lag_bound``.

    ``statuses`` are status-file snapshots in time order (``updated_at``, ``lag``,
    ``oldest_pending_since``); the answer is the first snapshot of the final caught-up streak.
    None if the last snapshot is behind, or if ingest was never behind (before its first batch
    the lag is not known and reads 0, so a streak must follow a snapshot that was behind).
    """
    since: float | None = None
    behind = False
    for s in statuses:
        if s["lag"] >= lag_bound or s.get("oldest_pending_since") is not None:
            behind, since = True, None
        elif behind and since is None:
            since = float(s["updated_at"])
    return since


@dataclass(frozen=True, slots=True)
class Landed:
    """Rows of one stream read back from Iceberg: count, distinct seqs, lowest and highest seq."""

    rows: int
    distinct: int
    first: int
    last: int


def completeness(expected: Iterable[StreamRange], landed: Mapping[StreamKey, Landed]) -> dict[str, Any]:
    """Landed rows against a gap-free feed's streams: what is missing, duplicated or unexpected.

    ``exactly_once`` holds iff every produced message landed once and nothing else landed.

    Raises:
        ValueError: a stream has gaps (its count is not its seq span), which this check cannot see.
    """
    want = 0
    missing = duplicates = out_of_range = 0
    seen: set[StreamKey] = set()
    for r in expected:
        span = r.last_seq - r.first_seq + 1
        if r.count != span:
            raise ValueError(f"{r.table} {r.symbol} {r.session} has gaps; completeness needs a gap-free feed")
        key = (r.table, r.exchange, r.symbol, r.session)
        seen.add(key)
        want += span
        got = landed.get(key)
        if got is None:
            missing += span
            continue
        duplicates += got.rows - got.distinct
        if got.first < r.first_seq or got.last > r.last_seq:
            out_of_range += 1
        missing += max(0, span - got.distinct)
    unexpected = sum(v.rows for k, v in landed.items() if k not in seen)
    rows = sum(v.rows for v in landed.values())
    return {
        "expected": want,
        "landed_rows": rows,
        "landed_distinct": sum(v.distinct for v in landed.values()),
        "missing": missing,
        "duplicates": duplicates,
        "streams_out_of_range": out_of_range,
        "unexpected_rows": unexpected,
        "exactly_once": missing == duplicates == out_of_range == unexpected == 0 and rows == want,
    }


def shed_cost(kept_us: float, shed_us: float, bare_us: float) -> dict[str, float | None]:
    """CPU per message, shed vs kept: of the whole ingest process, and of its own loop (minus bare)."""
    own_kept, own_shed = kept_us - bare_us, shed_us - bare_us
    return {
        "ratio_total": _round(shed_us / kept_us if kept_us > 0 else None),
        "ratio_own": _round(own_shed / own_kept if own_kept > 0 else None),
        "own_kept_us": _round(own_kept),
        "own_shed_us": _round(own_shed),
    }


def spread(values: Iterable[float | None]) -> dict[str, float | None]:
    """Median, min and max of the values that are not None (all None when there are none)."""
    v = [x for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None}
    return {"median": _round(statistics.median(v)), "min": _round(min(v)), "max": _round(max(v))}


def summarize(figures: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per ``(scenario, mode)``: the spread of every numeric figure over the runs, in first-seen order.

    Booleans (targets met) are counted instead: ``{"held": k, "runs": n}``.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for f in figures:
        groups.setdefault((f["scenario"], f["mode"]), []).append(f)
    out = []
    for (scenario, mode), runs in groups.items():
        row: dict[str, Any] = {"scenario": scenario, "mode": mode, "runs": len(runs)}
        keys = [k for k in runs[0] if k not in ("scenario", "mode", "run")]
        for k in keys:
            values = [r.get(k) for r in runs]
            flags = [v for v in values if v is not None]
            if flags and all(isinstance(v, bool) for v in flags):
                row[k] = {"held": sum(1 for v in values if v), "runs": len(values)}
            else:
                row[k] = spread(values)
        out.append(row)
    return out


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# -- the feed: rendered before its clock starts -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Block:
    """One simulator chunk as bytes: stream role and key per message, the values packed end to end."""

    roles: list[str]
    keys: list[bytes]
    data: bytes
    ends: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.roles)


@dataclass(slots=True)
class _RenderedFeed:
    blocks: list[_Block]
    report: FeedReport  # the ground truth for completeness (fault-free, so ranges are exact)
    backlog_blocks: int  # the first blocks are the backlog, produced before ingest starts
    live_rate: float


def _render(backlog: int, live_rate: float, live_s: float, seed: int) -> _RenderedFeed:
    """One simulator run of ``backlog`` + ``live_rate * live_s`` market events, as bytes."""
    events = backlog + int(live_rate * live_s)
    sim = Simulation(SimulatorConfig(rate=0, messages=events, seed=seed))
    blocks: list[_Block] = []
    for chunk in sim.chunks():
        roles, keys, values = zip(*chunk.messages, strict=True)
        ends = np.cumsum(np.fromiter(map(len, values), np.int64, len(values)))
        blocks.append(_Block(list(roles), list(keys), b"".join(values), ends))
    cut, n = 0, 0
    while backlog and n < backlog:
        n += len(blocks[cut])
        cut += 1
    return _RenderedFeed(blocks, sim.report, cut, live_rate)


def _send(
    producer: FeedProducer,
    topic_of: Mapping[str, str],
    blocks: Sequence[_Block],
    rate: float | None = None,
    stop: threading.Event | None = None,
) -> tuple[int, float]:
    """Produce ``blocks`` flat out, or paced at ``rate`` msg/s; returns (messages, seconds)."""
    started = time.perf_counter()
    sent = 0
    for block in blocks:
        start = 0
        for i, (role, key, end) in enumerate(zip(block.roles, block.keys, block.ends.tolist(), strict=True)):
            if rate is not None and i % 256 == 0:  # pace in steps of 256 messages (3 ms at 90k/s)
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0.001:
                    producer.poll(0)
                    time.sleep(ahead)
                if stop is not None and stop.is_set():
                    return sent, time.perf_counter() - started
            producer.send(topic_of[role], key, block.data[start:end])
            start = end
            sent += 1
    return sent, time.perf_counter() - started


class _LiveFeed(threading.Thread):
    """The live part of a feed, paced, on a thread of the bench process (rendered bytes: cheap)."""

    def __init__(self, producer: FeedProducer, topic_of: Mapping[str, str], feed: _RenderedFeed) -> None:
        super().__init__(name="bench-live-feed", daemon=True)
        self._producer, self._topic_of, self._feed = producer, topic_of, feed
        self.stop_event = threading.Event()
        self.sent = 0
        self.seconds = 0.0
        self.started_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        self.started_at = time.time()
        try:
            blocks = self._feed.blocks[self._feed.backlog_blocks :]
            self.sent, self.seconds = _send(
                self._producer, self._topic_of, blocks, self._feed.live_rate, self.stop_event
            )
            self._producer.flush()
        except BaseException as e:  # re-raised by the bench after join
            self.error = e


# -- child processes and what the bench watches of them ----------------------------------------

_BARE_CHILD = "from k2.bench.degrade import bare_consume_child; bare_consume_child()"


@dataclass(slots=True)
class _Ingest:
    proc: subprocess.Popen[bytes]
    report: Path
    log: Path
    status: Path
    t0: float  # wall clock when the process was started

    def wait(self, timeout: float) -> dict[str, Any]:
        """The report, once the process has exited (killed after ``timeout`` s)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"ingest did not finish within {timeout:.0f} s; log {self.log}") from None
        if code != 0 or not self.report.exists():
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"ingest failed ({code}): {tail}")
        data: dict[str, Any] = json.loads(self.report.read_text())
        return data


def _start_ingest(
    s: Settings, files: Path, writer: str, exit_when_idle: float | None, command: str = "ingest"
) -> _Ingest:
    """``k2 ingest`` (one process, named ``writer``) or ``k2 backfill`` as a child, logging to a file."""
    report, log = files.with_suffix(".report.json"), files.with_suffix(".log")
    cmd = [sys.executable, "-m", "k2.cli", command, "--report", str(report)]
    if command == "ingest":
        cmd += ["--processes", "1", "--writer-id", writer]
    if exit_when_idle is not None:
        cmd += ["--exit-when-idle", str(exit_when_idle)]
    t0 = time.time()
    with open(log, "ab") as sink:
        proc = subprocess.Popen(cmd, env=child_env(s, "INFO"), stdout=subprocess.DEVNULL, stderr=sink)
    return _Ingest(proc, report, log, s.ingest.status_dir / f"{writer}.json", t0)


def _log_events(log: Path, t0: float) -> dict[str, list[list[Any]]]:
    """From an ingest log: commits, backlog jumps and pauses, at seconds after ``t0``."""
    out: dict[str, list[list[Any]]] = {"commits": [], "backlog_deferred": [], "pauses": [], "backfilled": []}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
            at = round(datetime.fromisoformat(e["timestamp"]).timestamp() - t0, 2)
        except (ValueError, KeyError):
            continue
        match e.get("event"):
            case "committed":
                out["commits"].append([at, e["table"], e["rows"], e["seconds"]])
            case "backlog_deferred":
                out["backlog_deferred"].append([at, e["messages"], e["level"]])
            case "paused" | "resumed":
                out["pauses"].append([at, e["event"], e["buffered_rows"], e["memory"]])
            case "backfilled":
                out["backfilled"].append([at, e["messages"]])
    return out


class _Watch:
    """Samples a child's CPU seconds and RSS, and its status file, every ``every`` seconds."""

    def __init__(self, ingest: _Ingest, every: float = 0.1) -> None:
        self._proc = psutil.Process(ingest.proc.pid)
        self._status = ingest.status
        self._every = every
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.rss: list[float] = []
        self.statuses: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        seen = None
        while not self._stop.is_set():
            try:
                with self._proc.oneshot():
                    cpu = self._proc.cpu_times()
                    rss = self._proc.memory_info().rss
            except psutil.Error:  # exited
                return
            self.times.append(time.time())
            self.cpu.append(cpu.user + cpu.system)
            self.rss.append(float(rss))
            with contextlib.suppress(OSError, ValueError):
                status = json.loads(self._status.read_text())
                if status.get("updated_at") != seen:
                    seen = status.get("updated_at")
                    self.statuses.append(status)
            self._stop.wait(self._every)


def bare_consume_child() -> None:
    """In a child process: consume every message of the data topics as ingest's fetch thread does
    (same batch and timeout, same GC settings) and do nothing with them; print CPU per message.

    Settings come from the ``K2_*`` environment the bench set; the expected count is argv[1].
    """
    s = Settings()
    expected = int(sys.argv[1])
    freeze_startup_heap()
    consumer = Consumer(
        consumer_config(s.kafka, f"bench-bare-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False})
    )
    consumer.assign(
        [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in s.kafka.topics.data_topics()
            for p in range(s.kafka.partitions)
        ]
    )
    got, cpu0, wall0 = 0, 0.0, 0.0
    deadline = time.monotonic() + 600
    while got < expected and time.monotonic() < deadline:
        msgs = consumer.consume(s.ingest.consume_batch, s.ingest.consume_timeout_s)
        if msgs and not got:  # from the first batch on, as ingest's window starts at its first batch
            cpu0, wall0 = time.process_time(), time.perf_counter()
        got += len(msgs)
        del msgs
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    consumer.close()
    print(json.dumps({"messages": got, "cpu_s": cpu, "seconds": wall}))


def _bare_consume(s: Settings, expected: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _BARE_CHILD, str(expected)],
        env=child_env(s, "INFO"),
        capture_output=True,
        check=True,
        timeout=900,
    )
    data: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return data


def _landed(s: Settings) -> dict[StreamKey, Landed]:
    """Per stream, what landed in Iceberg (read with a fresh catalog, not through ingest)."""
    catalog = open_catalog(s.iceberg)
    out: dict[StreamKey, Landed] = {}
    for stream, table in TABLE_FOR_STREAM.items():
        rows = (
            catalog.load_table((s.iceberg.namespace, table))
            .scan(selected_fields=("exchange", "symbol", "session", "seq"))
            .to_arrow()
        )
        groups = rows.group_by(["exchange", "symbol", "session"]).aggregate(
            [("seq", "count"), ("seq", "count_distinct"), ("seq", "min"), ("seq", "max")]
        )
        del rows
        for g in groups.to_pylist():
            out[(stream, g["exchange"], g["symbol"], g["session"])] = Landed(
                g["seq_count"], g["seq_count_distinct"], g["seq_min"], g["seq_max"]
            )
    return out


# -- settings of one run ------------------------------------------------------------------------


def _settings(
    base: Settings,
    work: Path,
    run_id: str,
    topics_label: str,
    label: str,
    degradation: Mapping[str, Any],
    ingest: Mapping[str, Any] | None = None,
    shedding: Mapping[str, Any] | None = None,
) -> Settings:
    """Fresh topics (shared by the runs of one feed), group, warehouse and status dir per run."""
    prefix = f"bench-degrade-{run_id}-{topics_label}"
    topics = TopicNames(
        trades=f"{prefix}-trades",
        quotes=f"{prefix}-quotes",
        reference=f"{prefix}-reference",
        dlq=f"{prefix}-dlq",
    )
    kafka = base.kafka.model_copy(update={"topics": topics, "group_id": f"bench-degrade-{run_id}-{label}"})
    iceberg = base.iceberg.model_copy(update={"warehouse": str(work / f"{label}-warehouse"), "uri": ""})
    return base.model_copy(
        update={
            "kafka": kafka,
            "iceberg": iceberg,
            "ingest": base.ingest.model_copy(
                update={
                    "status_dir": work / f"{label}-status",
                    "freshness_samples": _FRESHNESS_CAP,
                    **(ingest or {}),
                }
            ),
            "degradation": base.degradation.model_copy(update=dict(degradation)),
            "shedding": base.shedding.model_copy(update=dict(shedding or {})),
        }
    )


def _topic_of(s: Settings) -> dict[str, str]:
    t = s.kafka.topics
    return {"trades": t.trades, "quotes": t.quotes, "reference": t.reference}


def _cleanup(s: Settings, topics: bool = True) -> None:
    shutil.rmtree(s.iceberg.warehouse, ignore_errors=True)
    if topics:
        with contextlib.suppress(Exception):  # leftover topics only cost disk; never fail a run here
            delete_topics(s.kafka.bootstrap_servers, s.kafka.topics.all())


# -- scenario: CPU per message, shed vs kept; the sustainable rate ------------------------------


def _cpu_scenario(base: Settings, work: Path, run_id: str, messages: int) -> dict[str, Any]:
    """Kept, shed and bare drains of one rendered backlog (see the module docstring)."""
    feed_s = _settings(base, work, run_id, "cpu", "cpu-feed", {"enabled": False})
    ensure_k2_topics(feed_s.kafka.bootstrap_servers, feed_s.kafka.topics, feed_s.kafka.partitions)
    feed = simulate(
        feed_s, SimulatorConfig(rate=0, messages=messages, seed=11), progress=False, prerender=True
    )
    total = feed.produced_total

    kept_s = _settings(base, work, run_id, "cpu", "cpu-kept", {"enabled": False})
    kept = _start_ingest(kept_s, work / "cpu-kept", "bench-kept", exit_when_idle=1.0)
    watch = _Watch(kept, every=0.05)
    rep = kept.wait(timeout=900)
    watch.stop()
    first, last = rep["first_consumed_at"], rep["last_committed_at"]
    kept_cpu = value_at(watch.times, watch.cpu, last) - value_at(watch.times, watch.cpu, first)
    landed = sum(rep["landed"].values())
    sustainable = landed / (last - first)
    idle_rss = _rss_before(watch, first)

    # Budget 1 byte: CIRCUIT_BREAK on the first idle tick, before any batch. No tier files: every
    # symbol is tier 3, so nothing is kept. Nothing is ever backfilled, so it is stopped by signal.
    shed_s = _settings(
        base,
        work,
        run_id,
        "cpu",
        "cpu-shed",
        {"enabled": True, "memory_budget_bytes": 1, "defer_backlog": False},
        shedding={"enabled": True, "tier_files": []},
    )
    shed = _start_ingest(shed_s, work / "cpu-shed", "bench-shed", exit_when_idle=None)
    watch = _Watch(shed, every=0.05)
    deadline = time.monotonic() + 900
    done_at = None
    while done_at is None and time.monotonic() < deadline and shed.proc.poll() is None:
        time.sleep(0.2)
        done_at = next(
            (st["updated_at"] for st in watch.statuses if st["shed"] >= total and st["lag"] == 0), None
        )
    shed.proc.send_signal(signal.SIGTERM)
    shed_rep = shed.wait(timeout=120)
    watch.stop()
    if done_at is None:
        raise RuntimeError(f"the shed-all drain did not shed {total:,} messages: {shed_rep['shed']:,}")
    shed_first = shed_rep["first_consumed_at"]
    shed_cpu = value_at(watch.times, watch.cpu, done_at) - value_at(watch.times, watch.cpu, shed_first)

    bare = _bare_consume(feed_s, total)
    _cleanup(kept_s, topics=False)
    _cleanup(shed_s)
    us = {
        "kept": kept_cpu / rep["consumed"] * 1e6,
        "shed": shed_cpu / total * 1e6,
        "bare": bare["cpu_s"] / bare["messages"] * 1e6,
    }
    return {
        "messages": total,
        "sustainable_rate": round(sustainable),
        "kept": {
            "consumed": rep["consumed"],
            "landed": landed,
            "seconds": round(last - first, 3),
            "cpu_s": round(kept_cpu, 3),
            "us_per_msg": round(us["kept"], 3),
            "peak_rss_mb": _mb(rep["peak_rss_bytes"]),
            "idle_rss_mb": _mb(idle_rss),
        },
        "shed": {
            "shed": shed_rep["shed"],
            "landed": sum(shed_rep["landed"].values()),
            "max_level": Level(shed_rep["max_level"]).name,
            "seconds": round(done_at - shed_first, 3),
            "cpu_s": round(shed_cpu, 3),
            "us_per_msg": round(us["shed"], 3),
            "window_end": "first status (written every ~1 s) showing every message shed, lag 0",
        },
        "bare": {
            "messages": bare["messages"],
            "cpu_s": round(bare["cpu_s"], 3),
            "us_per_msg": round(us["bare"], 3),
            "rate": round(bare["messages"] / bare["seconds"]) if bare["seconds"] else None,
        },
        **shed_cost(us["kept"], us["shed"], us["bare"]),
    }


def _rss_before(watch: _Watch, t: float) -> float:
    before = [r for at, r in zip(watch.times, watch.rss, strict=True) if at <= t]
    return before[-1] if before else (watch.rss[0] if watch.rss else 0.0)


def _mb(n: float | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# -- scenarios: catch-up and slow storage -------------------------------------------------------


def _overload_run(
    base: Settings,
    work: Path,
    run_id: str,
    scenario: str,
    mode: str,
    feed: _RenderedFeed,
    degradation: Mapping[str, Any],
    ingest: Mapping[str, Any],
) -> dict[str, Any]:
    """Backlog (if any) flat out with ingest down, then ingest and the live feed together."""
    label = f"{scenario}-{mode}"
    s = _settings(base, work, run_id, label, label, degradation, ingest)
    ensure_k2_topics(s.kafka.bootstrap_servers, s.kafka.topics, s.kafka.partitions)
    topic_of = _topic_of(s)
    broker = broker_process(s)
    with FeedProducer(s.kafka) as producer:
        producer.connect(topic_of.values())
        backlog, backlog_s = _send(producer, topic_of, feed.blocks[: feed.backlog_blocks])
        producer.flush()
        broker0, bench0 = cpu_seconds(broker), time.process_time()
        # No --exit-when-idle: that mode commits whenever ingest catches up (about every second
        # with a live feed), not at the production cadence. It is stopped once done, by SIGTERM.
        ing = _start_ingest(s, work / label, f"bench-{label}", exit_when_idle=None)
        watch = _Watch(ing)
        live = _LiveFeed(producer, topic_of, feed)
        try:
            live.start()
            live.join()
            if live.error is not None:
                raise live.error
        except BaseException:
            live.stop_event.set()
            ing.proc.terminate()
            watch.stop()
            raise
        feed_end = time.time()
    try:
        done_at, settled = _wait_done(ing, watch, feed_end, _SETTLE_S)
        ing.proc.send_signal(signal.SIGTERM)  # it commits what it holds, then exits
        rep = ing.wait(timeout=180)
    finally:
        watch.stop()
    broker1, bench1 = cpu_seconds(broker), time.process_time()
    forced = None
    if done_at is None and watch.statuses and watch.statuses[-1]["oldest_pending_since"] is not None:
        forced = _forced_backfill(s, work / f"{label}-backfill")  # stopped with ranges still deferred
    landed = _landed(s)
    check = completeness(feed.report.streams, landed)
    del landed
    _cleanup(s)
    budget = watch.statuses[-1]["memory_budget_bytes"] if watch.statuses else None
    result = _overload_figures(rep, watch, ing.t0, feed_end, feed.live_rate, budget, degradation)
    result["events"] = events = _log_events(ing.log, ing.t0)
    for w in result["windows"]:
        w["commits"] = sum(1 for c in events["commits"] if w["t"] <= c[0] < w["t"] + WINDOW_S)
    result["complete"]["settled"] = settled
    result["complete"]["done_s"] = round(done_at - ing.t0, 2) if done_at is not None else None
    result["complete"]["forced_backfill"] = forced
    result.update(
        scenario=scenario,
        mode=mode,
        settings={"degradation": dict(degradation), "ingest": dict(ingest)},
        feed={
            "backlog": backlog,
            "backlog_s": round(backlog_s, 2),
            "live_messages": live.sent,
            "live_rate_target": round(feed.live_rate),
            "live_rate": round(live.sent / live.seconds) if live.seconds else None,
            "live_s": round(live.seconds, 2),
            "live_started_s": round(live.started_at - ing.t0, 3),
        },
        completeness=check,
        cpu_s={
            "ingest": round(watch.cpu[-1], 2) if watch.cpu else None,
            "broker": None if broker0 is None or broker1 is None else round(broker1 - broker0, 2),
            "bench_and_feed": round(bench1 - bench0, 2),
        },
    )
    return result


def _wait_done(ing: _Ingest, watch: _Watch, feed_end: float, settle_s: float) -> tuple[float | None, str]:
    """Once the feed has ended, wait until everything produced is in the live buffer or Iceberg:
    two status snapshots in a row, written after the feed ended, with lag 0 and nothing deferred.

    Returns (that moment, "done"), or (None, why not): "latched" when for ``_LATCHED_S`` after
    the feed ended the level stayed above SOFT (where no backfill runs) with the backfill count
    unchanged, "timeout" after ``settle_s``, "exited" if the process ended on its own.
    """
    deadline = feed_end + settle_s
    while time.time() < deadline:
        if ing.proc.poll() is not None:
            return None, "exited"
        after = [st for st in watch.statuses if st["updated_at"] > feed_end + 0.5]
        done = [st["lag"] == 0 and st["oldest_pending_since"] is None for st in after]
        if len(done) >= 2 and done[-1] and done[-2]:
            return float(after[-2]["updated_at"]), "done"
        if after and after[-1]["updated_at"] - after[0]["updated_at"] >= _LATCHED_S:
            recent = [st for st in after if st["updated_at"] >= after[-1]["updated_at"] - _LATCHED_S]
            if (
                len({(st["level"], st["backfilled"]) for st in recent}) == 1
                and recent[0]["level"] > Level.SOFT
            ):
                return None, "latched"
        time.sleep(0.25)
    return None, "timeout"


def _forced_backfill(s: Settings, files: Path) -> dict[str, Any]:
    """``k2 backfill`` after an ingest that had to be stopped: does everything deferred still land?"""
    child = _start_ingest(s, files, "bench-backfill", exit_when_idle=3.0, command="backfill")
    rep = child.wait(timeout=900)
    return {
        "backfilled": rep["backfilled"],
        "backfilled_by_class": rep["backfilled_by_class"],
        "deferred_lost": rep["deferred_lost"],
        "seconds": round(rep["seconds"], 2),
        "exit_reason": rep["exit_reason"],
    }


def _overload_figures(
    rep: Mapping[str, Any],
    watch: _Watch,
    t0: float,
    feed_end: float,
    live_rate: float,
    budget: int | None,
    degradation: Mapping[str, Any],
) -> dict[str, Any]:
    samples: list[Sample] = [(float(t), str(c), float(f)) for t, c, f in rep["freshness"]]
    timeline = [(float(t), int(lv)) for t, lv in rep["level_timeline"]]
    end = max([rep["last_committed_at"] or t0, feed_end, *(t for t, _, _ in samples[-1:])])
    windows = freshness_windows(samples, _TIER1, t0, end)
    lag_t = [float(st["updated_at"]) for st in watch.statuses]
    lag_v = [float(st["lag"]) for st in watch.statuses]
    for w in windows:
        a, b = t0 + w["t"], t0 + w["t"] + WINDOW_S
        w["level"] = Level(level_at(timeline, b)).name
        w["lag_max"] = int(max((v for t, v in zip(lag_t, lag_v, strict=True) if a <= t < b), default=0))
        w["rss_max_mb"] = _mb(
            max((r for t, r in zip(watch.times, watch.rss, strict=True) if a <= t < b), default=0)
        )
    caught = caught_up_at(watch.statuses, max(live_rate, 1.0))
    off = not degradation.get("enabled", True)
    return {
        "ingest": {
            k: rep[k]
            for k in (
                "exit_reason",
                "consumed",
                "landed",
                "rejected",
                "duplicates",
                "shed",
                "shed_by_class",
                "backfilled",
                "backfilled_by_class",
                "deferred_lost",
                "level_changes",
                "memory_pauses",
                "commits",
            )
            if k in rep
        }
        | {"max_level": Level(rep["max_level"]).name, "seconds": round(rep["seconds"], 2)},
        "levels": [[round(t - t0, 2), Level(lv).name] for t, lv in timeline],
        "freshness": {
            "tier1_after_warmup": freshness_stats(samples, _TIER1, t0 + WARMUP_S),
            "all_after_warmup": freshness_stats(samples, None, t0 + WARMUP_S),
            "tier1_whole_run": freshness_stats(samples, _TIER1, t0),
            "samples": len(samples),
            "labels": _OFF_LABELS if off else "by tier (tier files)",
        },
        "windows": windows,
        "memory": {
            "budget_mb": _mb(budget),
            "peak_rss_mb": _mb(rep["peak_rss_bytes"]),
            "max_sampled_rss_mb": _mb(max(watch.rss, default=0)),
            "idle_rss_mb": _mb(_rss_before(watch, rep["first_consumed_at"] or t0)),
            "over_budget_s": round(time_above(watch.times, watch.rss, budget), 2) if budget else None,
        },
        "complete": {
            "last_commit_s": round(rep["last_committed_at"] - t0, 2) if rep["last_committed_at"] else None,
            "last_commit_after_feed_s": (
                round(rep["last_committed_at"] - feed_end, 2) if rep["last_committed_at"] else None
            ),
            "caught_up_s": round(caught - t0, 2) if caught is not None else None,
            "feed_end_s": round(feed_end - t0, 2),
        },
    }


def _figures(run: int, r: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a repeat summary takes the spread of, and the targets, for one overload run."""
    fresh, mem, done = r["freshness"]["tier1_after_warmup"], r["memory"], r["complete"]
    budget = mem["budget_mb"]
    under = budget is not None and max(mem["peak_rss_mb"], mem["max_sampled_rss_mb"]) <= budget
    return {
        "run": run,
        "scenario": r["scenario"],
        "mode": r["mode"],
        "live_rate": r["feed"]["live_rate"],
        "tier1_p50_s": fresh["p50"],
        "tier1_p99_s": fresh["p99"],
        "shed": r["ingest"]["shed"],
        "backfilled": r["ingest"]["backfilled"],
        "caught_up_s": done["caught_up_s"],
        "done_s": done["done_s"],
        "peak_rss_mb": mem["peak_rss_mb"],
        "max_sampled_rss_mb": mem["max_sampled_rss_mb"],
        "fresh_p99_le_1s": fresh["p99"] is not None and fresh["p99"] <= FRESHNESS_TARGET_S,
        "rss_under_budget": under,
        "exactly_once": r["completeness"]["exactly_once"] and r["ingest"]["deferred_lost"] == 0,
        "complete_without_forced_backfill": done["settled"] == "done" and r["completeness"]["exactly_once"],
    }


# -- the benchmark ------------------------------------------------------------------------------


def run_degrade_bench(
    settings: Settings,
    out: Path,
    repeat: int = 1,
    backlog: int = 3_000_000,
    catchup_s: float = 90.0,
    slow_s: float = 60.0,
    sustainable_rate: float | None = None,
    commit_delay_s: float = 2.5,
    memory_budget_bytes: int = 600 * 2**20,
    cpu_messages: int = 1_000_000,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run every scenario ``repeat`` times; write JSON to ``out`` and print the tables."""
    console = console or Console(stderr=True)
    run_id = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {
        "run_id": run_id,
        "started_at": datetime.now().astimezone().isoformat(),
        "params": {
            "repeat": repeat,
            "backlog": backlog,
            "catchup_s": catchup_s,
            "catchup_fraction": CATCHUP_FRACTION,
            "slow_s": slow_s,
            "slow_fraction": SLOW_FRACTION,
            "commit_delay_s": commit_delay_s,
            "memory_budget_mb": _mb(memory_budget_bytes),
            "cpu_messages": cpu_messages,
            "sustainable_rate": sustainable_rate,
            "sustainable_rate_source": "given" if sustainable_rate else "measured: kept drain of the cpu run",
            "warmup_s": WARMUP_S,
            "window_s": WINDOW_S,
        },
        "runs": [],
    }
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="k2-bench-degrade-") as tmp:
        work = Path(tmp)
        for n in range(1, repeat + 1):
            rid = f"{run_id}r{n}"
            run: dict[str, Any] = {"run": n}
            console.print(
                f"[bold]run {n}/{repeat}: cpu per message, shed vs kept ({cpu_messages:,} messages)[/]"
            )
            run["cpu"] = _cpu_scenario(settings, work, rid, cpu_messages)
            rate = sustainable_rate or run["cpu"]["sustainable_rate"]
            run["sustainable_rate"] = rate
            figures.append(_cpu_figures(n, run["cpu"]))
            scenarios = [
                ("catchup", backlog, CATCHUP_FRACTION * rate, catchup_s, {}),
                ("slow_storage", 0, SLOW_FRACTION * rate, slow_s, {"debug_commit_delay_s": commit_delay_s}),
            ]
            for name, backlog_n, live_rate, live_s, ingest in scenarios:
                console.print(f"[bold]run {n}/{repeat}: {name}: rendering the feed[/]")
                feed = _render(backlog_n, live_rate, live_s, seed=100 + n)
                budget = {"memory_budget_bytes": memory_budget_bytes} if name == "slow_storage" else {}
                for mode, enabled in (("on", True), ("off", False)):
                    console.print(f"[bold]run {n}/{repeat}: {name}, degradation {mode}[/]")
                    try:
                        r = _overload_run(
                            settings, work, rid, name, mode, feed, {"enabled": enabled, **budget}, ingest
                        )
                    except Exception as e:  # one failed run must not lose the others' figures
                        console.print(f"[red]{name} {mode} failed: {e}[/]")
                        run[f"{name}_{mode}"] = {"scenario": name, "mode": mode, "error": str(e)}
                        continue
                    run[f"{name}_{mode}"] = r
                    figures.append(_figures(n, r))
                    console.print(_run_line(r))
                    _write(out, {**results, "partial": True, "runs": [*results["runs"], run]})
                del feed
            results["runs"].append(run)
    results["summary"] = summarize(figures)
    results["machine"] = {
        "code": _code_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    _write(out, results)
    wide = Console(file=console.file, width=max(console.width, 170))  # a log file is not 80 columns
    for t in render(results):
        wide.print(t)
    return results


def _write(out: Path, results: Mapping[str, Any]) -> None:
    """Results so far (a long run that dies keeps what it measured)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def _code_version() -> str | None:
    """The commit the bench ran (other work may land while a long run is going)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], capture_output=True, text=True, timeout=5
        )
        return head.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else "") or None
    return None


def _cpu_figures(run: int, cpu: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run": run,
        "scenario": "cpu",
        "mode": "-",
        "sustainable_rate": cpu["sustainable_rate"],
        "kept_us": cpu["kept"]["us_per_msg"],
        "shed_us": cpu["shed"]["us_per_msg"],
        "bare_us": cpu["bare"]["us_per_msg"],
        "ratio_own": cpu["ratio_own"],
        "ratio_total": cpu["ratio_total"],
        "ratio_own_le_target": cpu["ratio_own"] is not None and cpu["ratio_own"] <= SHED_COST_TARGET,
    }


# -- rendering ----------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def _classes(counts: Mapping[str, int]) -> str:
    return "/".join(_fmt(counts.get(c, 0)) for c in ("tier1", "tier2", "tier3", "low"))


def _run_line(r: Mapping[str, Any]) -> str:
    f, c = r["freshness"]["tier1_after_warmup"], r["complete"]
    return (
        f"  {r['scenario']} {r['mode']}: feed {_fmt(r['feed']['live_rate'])} msg/s, max level "
        f"{r['ingest']['max_level']}, tier-1 p50/p99 {_fmt(f['p50'], '.2f')}/{_fmt(f['p99'], '.2f')} s, "
        f"shed {_fmt(r['ingest']['shed'])}, backfilled {_fmt(r['ingest']['backfilled'])}, done "
        f"{_fmt(c['done_s'], '.1f')} s, exactly once {r['completeness']['exactly_once']}"
    )


def render(results: Mapping[str, Any]) -> list[Table]:
    """The console view: every run, the CPU figures, the medians (with --repeat), one timeline each."""
    main = Table(title=f"k2 bench degrade (run {results['run_id']})", title_justify="left")
    cols = ["run", "scenario", "degr.", "feed msg/s (target)", "max level", "t1 fresh p50/p99 s (≥10 s)",
            "shed t1/t2/t3/low", "backfilled t1/t2/t3/low", "caught up s", "done s (feed end)",
            "peak RSS / budget MB", "exactly once"]  # fmt: skip
    for col in cols:
        main.add_column(col, justify="right")
    cpu = Table(title="CPU per message: one backlog drained kept, shed and bare", title_justify="left")
    for col in ["run", "messages", "sustainable msg/s", "kept µs", "shed µs", "bare consume µs",
                "own shed ÷ kept", "total shed ÷ kept"]:  # fmt: skip
        cpu.add_column(col, justify="right")
    for run in results["runs"]:
        c = run["cpu"]
        cpu.add_row(str(run["run"]), _fmt(c["messages"]), _fmt(c["sustainable_rate"]),
                    _fmt(c["kept"]["us_per_msg"], ".2f"), _fmt(c["shed"]["us_per_msg"], ".2f"),
                    _fmt(c["bare"]["us_per_msg"], ".2f"), _fmt(c["ratio_own"], ".3f"),
                    _fmt(c["ratio_total"], ".3f"))  # fmt: skip
        for key in ("catchup_on", "catchup_off", "slow_storage_on", "slow_storage_off"):
            r = run.get(key)
            if r is None or "error" in r:
                main.add_row(str(run["run"]), key, "", "failed: " + (r or {}).get("error", "?")[:60])
                continue
            f, mem, done = r["freshness"]["tier1_after_warmup"], r["memory"], r["complete"]
            main.add_row(
                str(run["run"]),
                r["scenario"],
                r["mode"],
                f"{_fmt(r['feed']['live_rate'])} ({_fmt(r['feed']['live_rate_target'])})",
                r["ingest"]["max_level"],
                f"{_fmt(f['p50'], '.2f')} / {_fmt(f['p99'], '.2f')}",
                _classes(r["ingest"]["shed_by_class"]),
                _classes(r["ingest"]["backfilled_by_class"]),
                _fmt(done["caught_up_s"], ".1f"),
                f"{_fmt(done['done_s'], '.1f')} ({_fmt(done['feed_end_s'], '.0f')})",
                f"{_fmt(max(mem['peak_rss_mb'], mem['max_sampled_rss_mb']))} / {_fmt(mem['budget_mb'])}",
                _exactly_once_cell(r),
            )
    main.caption = (
        f"feeds at {CATCHUP_FRACTION:.0%} (catch-up) and {SLOW_FRACTION:.0%} (slow storage) of the "
        f"sustainable rate ({results['params']['sustainable_rate_source']}); freshness = Kafka create "
        "time → live buffer"
    )
    tables = [main, cpu]
    if results["params"]["repeat"] > 1:
        tables.append(_summary_table(results["summary"]))
    first = results["runs"][0] if results["runs"] else {}
    for scenario in ("catchup", "slow_storage"):
        on, off = first.get(f"{scenario}_on"), first.get(f"{scenario}_off")
        if on and off and "error" not in on and "error" not in off:
            tables.append(_timeline_table(scenario, on, off))
    return tables


def _exactly_once_cell(r: Mapping[str, Any]) -> str:
    if not (r["completeness"]["exactly_once"] and r["ingest"]["deferred_lost"] == 0):
        return "NO"
    return (
        "yes"
        if r["complete"]["settled"] == "done"
        else f"yes, after k2 backfill ({r['complete']['settled']})"
    )


def _summary_table(summary: Sequence[Mapping[str, Any]]) -> Table:
    t = Table(title="median (min-max) over the runs", title_justify="left")
    for col in ("scenario", "degr.", "figure", "median", "range / held"):
        t.add_column(col, justify="right")
    for row in summary:
        for k, v in row.items():
            if not isinstance(v, dict):
                continue
            if "held" in v:
                t.add_row(row["scenario"], row["mode"], k, "", f"{v['held']} of {v['runs']}")
            else:
                t.add_row(row["scenario"], row["mode"], k, _fmt(v["median"], ",.3g"),
                          f"{_fmt(v['min'], ',.3g')} - {_fmt(v['max'], ',.3g')}")  # fmt: skip
    return t


def _timeline_table(scenario: str, on: Mapping[str, Any], off: Mapping[str, Any]) -> Table:
    t = Table(
        title=f"{scenario}, run 1: tier-1 freshness (s) per {WINDOW_S:g} s window", title_justify="left"
    )
    for col in ("t s", "on level", "on p50", "on p99", "on lag", "off p50", "off p99", "off lag"):
        t.add_column(col, justify="right")
    on_t = {w["t"]: w for w in on["windows"]}
    off_t = {w["t"]: w for w in off["windows"]}
    sampled = {w["t"] for w in [*on["windows"], *off["windows"]] if w["n"]}
    for at in sorted(sampled):
        w, o = (
            on_t.get(at, {"t": at, "level": "-", "p50": None, "p99": None, "lag_max": None}),
            off_t.get(at, {}),
        )
        t.add_row(f"{w['t']:g}", w["level"], _fmt(w["p50"], ".2f"), _fmt(w["p99"], ".2f"), _fmt(w["lag_max"]),
                  _fmt(o.get("p50"), ".2f"), _fmt(o.get("p99"), ".2f"), _fmt(o.get("lag_max")))  # fmt: skip
    t.caption = "off: " + _OFF_LABELS
    return t
