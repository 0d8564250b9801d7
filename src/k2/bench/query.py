"""``k2 bench query``: the query API over ≥ 10M rows of history and ≥ 500k live rows, under ingest.

One run, on a real broker, with every measured party in its own process:

- **history**: ``history_rows`` synthetic trades (``k2.bench.synthetic``) written straight into the
  ``trades`` table in ``history_commits`` commits, with snapshot expiry as the committer runs it,
  under their own topic name (``bench-history``), so the live topic's offsets start empty. Written
  once per run and shared by every repeat; each repeat's live ingest commits into the same table
  (under its own topic) as it goes, so later repeats find a little more history.
- **sustainable rate**: ingest (degradation off, production flush cadence) drains a rendered
  backlog; rows ÷ (last commit - first batch), as ``k2 bench degrade`` measures it. The live feed
  runs at ``load_fraction`` (50 %) of it.
- **live**: ``k2 ingest`` flushing at 2.5M rows or 60 s (commits land while the queries run; the
  buffer keeps well over 500k trades) and ``k2 api``, both children; the simulator, paced, in a
  third child (session 2026-01-01, the history's day, on the same 200 symbols) fills the buffer
  until it holds ``live_trades`` trades (estimated from the quote ratio), then the phases run:

  1. *ingest alone*: messages consumed per second over ``window_s`` (ingest's /metrics), no
     query clients;
  2. *latency*: one client process, sequential ``GET`` s: last 100 trades of one symbol (the
     busiest, SIM1A001), 1-minute bars of that symbol for the day, VWAP of every symbol for the
     day; each question up to its count or 20 s, whichever comes first;
  3. *freshness*: a client process produces single trades of its own symbol (its own producer,
     ``linger.ms`` 0) and polls ``/v1/trades?symbol=…&last=1`` until each is there: produce call →
     the response that shows it (an upper bound, by at most one poll round trip);
  4. *ingest with 4 clients*: four client processes loop over the three queries; consumed
     messages per second over ``window_s`` again. The offered load is the same in 1 and 4.

- **baseline**: the same three questions through a plain DuckDB ``read_parquet`` over every
  Parquet file of the history, in this process, after the live phases (no feed running).

Targets (from the issue): last-100 p99 ≤ 20 ms, bars p99 ≤ 50 ms, freshness p50 ≤ 100 ms and p99
≤ 250 ms, ingest throughput with 4 clients ≥ 0.9 x without. ``repeat`` runs the live part (and the
baseline) several times; the summary is the median and range of every per-run figure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from k2.bench.degrade import _Block, _RenderedFeed, _send, percentile, spread
from k2.bench.harness import child_env
from k2.bench.synthetic import SyntheticTape, write_history
from k2.broker.topics import delete_topics, ensure_k2_topics
from k2.config import Settings, TopicNames
from k2.feeds.producer import FeedProducer
from k2.feeds.simulator import Simulation, SimulatorConfig, symbol_name
from k2.lake import TableWriter, ensure_tables, open_catalog
from k2.lake.maintenance import expire_snapshots

__all__ = [
    "TARGETS",
    "Target",
    "client_child",
    "evaluate",
    "latency_summary",
    "run_query_bench",
    "summarize_runs",
    "window_rate",
]

DAY = date(2026, 1, 1)
SESSION = 20260101
HISTORY_START_US = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6)  # 00:00 UTC
LIVE_START_US = int(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp() * 1e6)  # after the history's hours
SYMBOL = symbol_name(1, 1)  # SIM1A001: the busiest live symbol (Zipf rank 1), 1/200 of history
HISTORY_TOPIC = "bench-history"
CLIENTS = 4


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: ``figure`` (a key of a run's figures) ``op`` ``bound``."""

    figure: str
    op: str  # "<=" or ">="
    bound: float

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.bound if self.op == "<=" else value >= self.bound


TARGETS: tuple[Target, ...] = (
    Target("last100_p99_ms", "<=", 20.0),
    Target("bars_p99_ms", "<=", 50.0),
    Target("freshness_p50_ms", "<=", 100.0),
    Target("freshness_p99_ms", "<=", 250.0),
    Target("ingest_ratio_4_clients", ">=", 0.9),
)


# -- pure summaries (tested in tests/unit/bench/test_bench_query.py) ------------------------------


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p99 (nearest rank), min, max and mean of latencies in milliseconds."""
    if not values_ms:
        return {"n": 0, "p50": None, "p99": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(values_ms),
        "p50": _r(percentile(values_ms, 50)),
        "p99": _r(percentile(values_ms, 99)),
        "min": _r(min(values_ms)),
        "max": _r(max(values_ms)),
        "mean": _r(sum(values_ms) / len(values_ms)),
    }


def window_rate(samples: Sequence[tuple[float, int]], start: float, end: float) -> dict[str, Any]:
    """Messages per second from ``(time, consumed so far)`` samples inside ``[start, end]``.

    The rate is taken between the first and the last sample in the window (status files are
    rewritten about every second, so the window a rate covers is what the samples span).
    """
    inside = [(t, n) for t, n in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return {"rows": None, "seconds": None, "rate": None}
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return {"rows": n1 - n0, "seconds": _r(t1 - t0, 3), "rate": _r((n1 - n0) / (t1 - t0), 1)}


def evaluate(figures: Mapping[str, Any], targets: Sequence[Target] = TARGETS) -> dict[str, Any]:
    """Per target: the figure, the bound and whether it is met (None when not measured)."""
    return {
        t.figure: {
            "value": figures.get(t.figure),
            "target": f"{t.op} {t.bound:g}",
            "met": t.met(figures.get(t.figure)),
        }
        for t in targets
    }


def summarize_runs(
    figures: Sequence[Mapping[str, Any]], targets: Sequence[Target] = TARGETS
) -> dict[str, Any]:
    """Median and range of every figure over the runs; per target, the verdict on the median and
    in how many runs it held."""
    keys = [k for k in figures[0] if k != "run"] if figures else []
    out: dict[str, Any] = {
        "runs": len(figures),
        "figures": {k: spread([f.get(k) for f in figures]) for k in keys},
    }
    verdicts = {}
    for t in targets:
        median = out["figures"].get(t.figure, {}).get("median")
        per_run = [t.met(f.get(t.figure)) for f in figures]
        verdicts[t.figure] = {
            "target": f"{t.op} {t.bound:g}",
            "median": median,
            "met_by_median": t.met(median),
            "held": sum(1 for v in per_run if v),
            "runs": len(per_run),
        }
    out["targets"] = verdicts
    return out


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(float(x), digits)


# -- query clients: child processes, so their Python never shares a GIL with what they measure ----


def _queries(symbol: str, day: date) -> dict[str, str]:
    d = day.isoformat()
    return {
        "last100": f"/v1/trades?symbol={symbol}&last=100",
        "bars": f"/v1/bars?symbol={symbol}&day={d}&interval=1-MINUTE-LAST",
        "vwap": f"/v1/vwap?day={d}",
    }


def client_child() -> None:
    """In a child process: run the client ``argv[1]`` (JSON) describes; print its samples as JSON.

    Modes: ``latency`` (each query ``counts[name]`` times in turn, after two untimed calls),
    ``loop`` (the queries round-robin until ``seconds`` have passed), ``freshness`` (see module doc).
    """
    import httpx

    spec = json.loads(sys.argv[1])
    out: dict[str, Any] = {"samples": {}, "errors": 0}
    with httpx.Client(base_url=spec["url"], timeout=60.0) as client:

        def timed(path: str) -> float | None:
            started = time.perf_counter()
            try:
                resp = client.get(path)
            except httpx.HTTPError as e:  # a timeout is a result of the bench, not a crash of it
                out["errors"] += 1
                out.setdefault("error_examples", []).append(f"{path}: {e!r}"[:300])
                return None
            took = (time.perf_counter() - started) * 1000
            if resp.status_code != 200:
                out["errors"] += 1
                out.setdefault("error_examples", []).append(f"{resp.status_code} {resp.text[:200]}")
                return None
            return took

        queries: dict[str, str] = spec.get("queries", {})
        if spec["mode"] == "latency":
            for name, path in queries.items():
                for _ in range(2):
                    timed(path)
                until = time.monotonic() + spec["budget_s"]
                samples: list[float | None] = []
                while len(samples) < spec["counts"][name] and time.monotonic() < until:
                    samples.append(timed(path))
                out["samples"][name] = [s for s in samples if s is not None]
        elif spec["mode"] == "loop":
            deadline = time.monotonic() + spec["seconds"]
            names = list(queries)
            random.Random(spec.get("seed", 0)).shuffle(names)  # four clients not in lockstep
            for name in names:
                out["samples"][name] = []
            i = 0
            while time.monotonic() < deadline:
                name = names[i % len(names)]
                took = timed(queries[name])
                if took is not None:
                    out["samples"][name].append(took)
                i += 1
        else:
            out["samples"]["freshness"], out["misses"] = _freshness(client, spec)
    print(json.dumps(out))


def _freshness(client: Any, spec: Mapping[str, Any]) -> tuple[list[float], int]:
    from confluent_kafka import Producer

    from k2.wire import SCHEMA_VERSION, Trade, encoder

    producer = Producer(
        {"bootstrap.servers": spec["bootstrap"], "linger.ms": 0, "acks": "all", "enable.idempotence": True}
    )
    symbol, topic = spec["symbol"], spec["topic"]
    session = int(datetime.now(UTC).strftime("%Y%m%d"))
    rng = random.Random(1)
    samples: list[float] = []
    misses = 0
    for seq in range(1, spec["samples"] + 1):
        time.sleep(rng.uniform(0.02, 0.12))  # not in step with ingest's consume cycle
        now_us = time.time_ns() // 1000
        trade = Trade(
            schema_version=SCHEMA_VERSION, exchange="SIM", symbol=symbol, session=session, seq=seq,
            ts=now_us, price=100.0 + seq / 100, qty=1, trade_id=f"fresh-{seq}",
        )  # fmt: skip
        sent = time.time()
        producer.produce(topic, encoder.encode(trade), symbol.encode())
        producer.poll(0)
        deadline = sent + spec["deadline_s"]
        seen = None
        while time.time() < deadline:
            resp = client.get(f"/v1/trades?symbol={symbol}&last=1")
            producer.poll(0)
            if resp.status_code == 200:
                rows = resp.json()["rows"]
                if rows and int(rows[-1]["seq"]) == seq:  # JSON carries ids as strings
                    seen = time.time()
                    break
            time.sleep(0.002)
        if seen is None:
            misses += 1
        else:
            samples.append((seen - sent) * 1000)
    producer.flush(10)
    return samples, misses


_CLIENT_CHILD = "from k2.bench.query import client_child; client_child()"
_FEED_CHILD = "from k2.bench.query import feed_child; feed_child()"


def feed_child() -> None:
    """In a child process: the simulator paced at ``argv[1]`` msg/s, session 2026-01-01, until killed.

    Generated as it goes (about 3 µs a message here, plus the send): a pre-rendered feed for a
    whole repeat would hold gigabytes, and the queries' pace decides how long a repeat runs.
    """
    from k2.feeds.simulator import simulate

    config = SimulatorConfig(
        rate=float(sys.argv[1]), messages=None, seed=21, session=SESSION, start_ts_us=LIVE_START_US
    )
    simulate(Settings(), config, progress=False)


def _start_client(spec: Mapping[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLIENT_CHILD, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _client_result(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"query client failed ({proc.returncode}): {err.decode()[-2000:]}")
    data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return data


# -- history, once per run ----------------------------------------------------------------------


def _symbols() -> list[str]:
    """The simulator's default 200 symbols, so history and the live feed share them."""
    return [symbol_name(t, n) for t, count in ((1, 10), (2, 40), (3, 150)) for n in range(1, count + 1)]


def _write_history(s: Settings, rows: int, commits: int) -> dict[str, Any]:
    """``rows`` synthetic trades in ``commits`` commits, expiring snapshots as ingest's committer does."""
    catalog = open_catalog(s.iceberg)
    table = ensure_tables(catalog, s.iceberg)["trades"]
    writer = TableWriter(table, HISTORY_TOPIC, "bench-history")
    tape = SyntheticTape(_symbols(), s.kafka.partitions, start_us=HISTORY_START_US)
    started = time.perf_counter()
    per = max(1, rows // commits)
    written = 0
    every = s.iceberg.maintenance_every_commits
    for c in range(commits):
        n = per if c < commits - 1 else rows - written
        written += write_history(writer, tape, n, 1)
        if (c + 1) % every == 0:
            expire_snapshots(table, s.iceberg.expire_snapshots_older_than_s, s.iceberg.keep_min_snapshots)
    files = sorted(str(p) for p in Path(s.iceberg.warehouse).rglob("*.parquet"))
    return {
        "rows": written,
        "commits": commits,
        "seconds": round(time.perf_counter() - started, 1),
        "files": len(files),
        "bytes": sum(os.path.getsize(f) for f in files),
        "ts_from": datetime.fromtimestamp(HISTORY_START_US / 1e6, UTC).isoformat(),
        "ts_to": datetime.fromtimestamp((HISTORY_START_US + written * tape.step_us) / 1e6, UTC).isoformat(),
    }


# -- the feed -----------------------------------------------------------------------------------


def _render(messages: int, rate: float, seed: int) -> _RenderedFeed:
    """``messages`` market events of session 2026-01-01, ``1/rate`` s apart in event time, as bytes."""
    config = SimulatorConfig(
        rate=rate, messages=messages, seed=seed, session=SESSION, start_ts_us=LIVE_START_US
    )
    sim = Simulation(config)
    blocks: list[_Block] = []
    for chunk in sim.chunks():
        roles, keys, values = zip(*chunk.messages, strict=True)
        ends = np.cumsum(np.fromiter(map(len, values), np.int64, len(values)))
        blocks.append(_Block(list(roles), list(keys), b"".join(values), ends))
    return _RenderedFeed(blocks, sim.report, 0, rate)


TRADE_SHARE = 1 - SimulatorConfig().quote_ratio  # of market events (200 listings are noise)


# -- settings and child processes ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _live_settings(base: Settings, work: Path, warehouse: Path, label: str, api_port: int) -> Settings:
    """Fresh topics, group and status dir; the shared history warehouse; nothing flushed while measuring."""
    prefix = f"bench-query-{label}"
    topics = TopicNames(
        trades=f"{prefix}-trades",
        quotes=f"{prefix}-quotes",
        reference=f"{prefix}-reference",
        dlq=f"{prefix}-dlq",
    )
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topics": topics, "group_id": f"{prefix}-ingest"}),
            "iceberg": base.iceberg.model_copy(update={"warehouse": str(warehouse), "uri": ""}),
            "ingest": base.ingest.model_copy(
                update={
                    "status_dir": work / f"{label}-status",
                    # Commits land while the phases run (as in production) yet the buffer holds
                    # the wanted live rows: flush at 2.5M rows or 60 s (~30 s at half rate).
                    "flush_rows": 2_500_000,
                    "flush_seconds": 60.0,
                    "max_buffered_rows": 100_000_000,
                }
            ),
            # Half the sustainable rate never needs degradation; off, nothing can be shed mid-run.
            "degradation": base.degradation.model_copy(update={"enabled": False}),
            "live": base.live.model_copy(update={"enabled": True}),
            "api": base.api.model_copy(
                update={
                    "host": "127.0.0.1",
                    "port": api_port,
                    "rate_limit_per_s": 1e6,
                    "rate_limit_burst": 1_000_000,
                }
            ),
        }
    )


def _consumed(metrics_text: str) -> int:
    """Sum of ``k2_ingest_messages_consumed_total`` over tables in a /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(metrics_text)
            if family.name == "k2_ingest_messages_consumed"
            for sample in family.samples
            if sample.name == "k2_ingest_messages_consumed_total"
        )
    )


@dataclass(slots=True)
class _StatusWatch:
    """Samples the ingest status file (buffer rows, lag) and the CPU of ingest and the API."""

    status: Path
    procs: dict[str, psutil.Process]
    rows: list[tuple[float, int]] = field(default_factory=list)
    lag: list[tuple[float, int]] = field(default_factory=list)
    cpu: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    latest: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-query-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        import httpx

        seen = None
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
                st = json.loads(self.status.read_text())
                if st["updated_at"] != seen:
                    seen = st["updated_at"]
                    self.latest = st
                    self.lag.append((st["updated_at"], st["lag"]))
                # Throughput from ingest's own consumed counter: commits land during the run, so
                # the buffer's growth is not the rate.
                if st.get("metrics_endpoint"):
                    text = httpx.get(st["metrics_endpoint"], timeout=2).text
                    self.rows.append((time.time(), _consumed(text)))
            cpu = {}
            for name, p in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    cpu[name] = t.user + t.system + t.children_user + t.children_system
            self.cpu.append((time.time(), cpu))
            self._stop.wait(0.2)

    def cpu_between(self, name: str, a: float, b: float) -> float | None:
        inside = [(t, c[name]) for t, c in self.cpu if a <= t <= b and name in c]
        return _r(inside[-1][1] - inside[0][1], 2) if len(inside) >= 2 else None

    def max_lag(self, a: float, b: float) -> int | None:
        inside = [n for t, n in self.lag if a <= t <= b]
        return max(inside) if inside else None


def _start_child(s: Settings, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", *args], env=child_env(s, "WARNING"), stdout=sink, stderr=sink
        )


def _wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready in {timeout:.0f} s; log {log}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the sustainable rate -----------------------------------------------------------------------


def _sustainable_rate(base: Settings, work: Path, run_id: str, messages: int) -> dict[str, Any]:
    """Ingest (degradation off, default flush cadence) drains a rendered backlog of ``messages``."""
    label = f"{run_id}-sustain"
    s = _live_settings(base, work, work / f"{label}-warehouse", label, _free_port())
    s = s.model_copy(update={"ingest": s.ingest.model_copy(update=base.ingest.model_dump(
        include={"flush_rows", "flush_seconds", "max_buffered_rows"}))})  # fmt: skip
    ensure_k2_topics(s.kafka.bootstrap_servers, s.kafka.topics, s.kafka.partitions)
    feed = _render(messages, 0.0, seed=5)
    topic_of = {
        "trades": s.kafka.topics.trades,
        "quotes": s.kafka.topics.quotes,
        "reference": s.kafka.topics.reference,
    }
    with FeedProducer(s.kafka) as producer:
        producer.connect(topic_of.values())
        sent, _ = _send(producer, topic_of, feed.blocks)
        producer.flush()
    del feed
    report, log = work / f"{label}.report.json", work / f"{label}.log"
    proc = _start_child(
        s, ["ingest", "--processes", "1", "--exit-when-idle", "1.0", "--report", str(report)], log
    )
    if proc.wait(timeout=900) != 0:
        raise RuntimeError(f"sustainable-rate drain failed: {log.read_text()[-2000:]}")
    rep = json.loads(report.read_text())
    seconds = rep["last_committed_at"] - rep["first_consumed_at"]
    landed = sum(rep["landed"].values())
    with contextlib.suppress(Exception):
        delete_topics(s.kafka.bootstrap_servers, s.kafka.topics.all())
    return {"messages": sent, "landed": landed, "seconds": round(seconds, 2), "rate": round(landed / seconds)}


# -- one repeat ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    rate: float
    live_trades: int
    window_s: float
    counts: dict[str, int]
    freshness_samples: int
    latency_budget_s: float


def _run_live(
    base: Settings, work: Path, warehouse: Path, label: str, plan: _Plan, console: Console
) -> dict[str, Any]:
    port = _free_port()
    s = _live_settings(base, work, warehouse, label, port)
    ensure_k2_topics(s.kafka.bootstrap_servers, s.kafka.topics, s.kafka.partitions)
    status = s.ingest.status_dir / f"bench-query-{label}.json"
    url = f"http://127.0.0.1:{port}"
    queries = _queries(SYMBOL, DAY)
    ingest = api = None
    feed: subprocess.Popen[bytes] | None = None
    watch: _StatusWatch | None = None
    out: dict[str, Any] = {"label": label, "api_port": port}
    try:
        ingest = _start_child(
            s,
            ["ingest", "--processes", "1", "--writer-id", f"bench-query-{label}"],
            work / f"{label}-ingest.log",
        )
        _wait_for(
            lambda: json.loads(status.read_text()).get("live_endpoint"), 120, "ingest", ingest,
            work / f"{label}-ingest.log",
        )  # fmt: skip
        api = _start_child(s, ["api"], work / f"{label}-api.log")
        import httpx

        http = httpx.Client(base_url=url, timeout=120.0)
        _wait_for(
            lambda: http.get("/health/live").status_code == 200, 120, "api", api, work / f"{label}-api.log"
        )
        # Cold: the first VWAP decodes every history file into the API's cache.
        cold = {}
        for name in ("vwap", "bars", "last100"):
            started = time.perf_counter()
            resp = http.get(queries[name])
            resp.raise_for_status()
            cold[name] = round((time.perf_counter() - started) * 1000, 1)
        out["cold_ms"] = cold
        out["history_vwap_symbols"] = len(http.get(queries["vwap"]).json()["rows"])
        watch = _StatusWatch(status, {"ingest": psutil.Process(ingest.pid), "api": psutil.Process(api.pid)})
        watch.start()

        with open(work / f"{label}-feed.log", "ab") as sink:
            feed = subprocess.Popen(
                [sys.executable, "-c", _FEED_CHILD, str(plan.rate)],
                env=child_env(s),
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        share = TRADE_SHARE
        need_rows = math.ceil(plan.live_trades / share)
        fill_started = time.time()
        while watch.latest.get("buffer_rows", 0) < need_rows:
            if feed.poll() is not None:
                raise RuntimeError(
                    f"the feed exited ({feed.returncode}) before the buffer held {need_rows:,}"
                )
            time.sleep(0.2)
        out["fill_s"] = round(time.time() - fill_started, 1)
        out["buffer_rows_at_start"] = watch.latest["buffer_rows"]
        console.print(f"  buffer holds {watch.latest['buffer_rows']:,} rows after {out['fill_s']} s")

        # 1. ingest alone
        a = time.time()
        time.sleep(plan.window_s)
        b = time.time()
        out["ingest_alone"] = _window(watch, a, b)

        # 2. latency, one client
        console.print(f"  ingest alone: {out['ingest_alone']}")
        a = time.time()
        spec = {"mode": "latency", "url": url, "queries": queries, "counts": plan.counts, "budget_s": 20.0}
        lat = _client_result(_start_client(spec), timeout=plan.latency_budget_s + 120)
        out["latency"] = {k: latency_summary(v) for k, v in lat["samples"].items()}
        out["latency_errors"] = lat["errors"]
        out["latency_phase"] = {
            "seconds": round(time.time() - a, 1),
            "buffer_rows_end": watch.latest["buffer_rows"],
        }

        # 3. freshness
        console.print(f"  latency: {out['latency']}")
        fresh: dict[str, Any] = {
            "mode": "freshness",
            "url": url,
            "bootstrap": s.kafka.bootstrap_servers,
            "topic": s.kafka.topics.trades,
            "symbol": f"FRESH{label.replace('-', '')}"[:32],
            "samples": plan.freshness_samples,
            "deadline_s": 3.0,
        }
        fr = _client_result(_start_client(fresh), timeout=plan.freshness_samples * 11 + 60)
        out["freshness"] = latency_summary(fr["samples"]["freshness"])
        out["freshness_misses"] = fr["misses"]
        # A trade not visible within the deadline counts as the deadline (a lower bound), so the
        # percentiles cannot look better for the samples that never arrived.
        censored = fr["samples"]["freshness"] + [fresh["deadline_s"] * 1000] * fr["misses"]
        out["freshness_with_misses"] = latency_summary(censored)

        # 4. ingest with four clients
        console.print(f"  freshness: {out['freshness']}, misses {out['freshness_misses']}")
        ramp = 2.0
        clients = [
            _start_client(
                {
                    "mode": "loop",
                    "url": url,
                    "queries": queries,
                    "seconds": plan.window_s + 2 * ramp,
                    "seed": i,
                }
            )
            for i in range(CLIENTS)
        ]
        time.sleep(ramp + 1.0)  # interpreter start-up and first requests
        a = time.time()
        time.sleep(plan.window_s)
        b = time.time()
        results = [_client_result(c, timeout=plan.window_s + 300) for c in clients]
        out["ingest_4_clients"] = _window(watch, a, b)
        merged: dict[str, list[float]] = {}
        for r in results:
            for k, v in r["samples"].items():
                merged.setdefault(k, []).extend(v)
        out["latency_4_clients"] = {k: latency_summary(v) for k, v in merged.items()}
        out["latency_4_clients_errors"] = sum(r["errors"] for r in results)
        out["buffer_rows_at_end"] = watch.latest["buffer_rows"]
        out["live_trades_at_end_est"] = round(watch.latest["buffer_rows"] * share)
        http.close()
    finally:
        _stop(feed, signal.SIGKILL)
        if watch is not None:
            watch.stop()
        _stop(api, signal.SIGTERM)
        # Killed, not stopped: a clean stop would commit the buffer, and every repeat must query
        # the same history (the next one would also restore this one's rows as duplicates).
        _stop(ingest, signal.SIGKILL)
        with contextlib.suppress(Exception):
            delete_topics(s.kafka.bootstrap_servers, s.kafka.topics.all())
    return out


def _window(watch: _StatusWatch, a: float, b: float) -> dict[str, Any]:
    return {
        **window_rate(watch.rows, a, b),
        "max_lag": watch.max_lag(a, b),
        "cpu_s": {name: watch.cpu_between(name, a, b) for name in ("ingest", "api")},
        "wall_s": round(b - a, 2),
    }


# -- the DuckDB baseline ------------------------------------------------------------------------


def _baseline(warehouse: Path, counts: Mapping[str, int]) -> dict[str, Any]:
    """The three questions over ``read_parquet`` of every history file (no cache, no live part)."""
    import duckdb

    files = sorted(str(p) for p in (warehouse).rglob("*.parquet") if "/trades/" in str(p))
    con = duckdb.connect()
    src = f"read_parquet({files!r})"  # inlined: a table function's file list cannot be a parameter
    sql = {
        "last100": (
            f"SELECT * FROM (SELECT * FROM {src} WHERE symbol = $sym ORDER BY ts DESC LIMIT 100) ORDER BY ts"
        ),
        "bars": (
            "SELECT time_bucket(INTERVAL 1 minute, ts) AS bar_start, arg_min(price, ts) AS open, "
            "max(price) AS high, min(price) AS low, arg_max(price, ts) AS close, sum(qty) AS volume, "
            f"sum(price * qty) / sum(qty) AS vwap, count(*) AS trades FROM {src} "
            "WHERE symbol = $sym AND exchange = 'SIM' AND session = $session GROUP BY 1 ORDER BY 1"
        ),
        "vwap": (
            "SELECT symbol, sum(price * qty) / sum(qty) AS vwap, sum(qty) AS volume, count(*) AS trades "
            f"FROM {src} WHERE exchange = 'SIM' AND session = $session GROUP BY symbol ORDER BY symbol"
        ),
    }
    params = {"sym": SYMBOL, "session": SESSION}
    out: dict[str, Any] = {"files": len(files)}
    for name, q in sql.items():
        p = {k: v for k, v in params.items() if f"${k}" in q}
        con.execute(q, p).fetch_arrow_table()  # untimed: plans once, warms the page cache
        samples = []
        for _ in range(counts[name]):
            started = time.perf_counter()
            rows = con.execute(q, p).fetch_arrow_table()
            samples.append((time.perf_counter() - started) * 1000)
        out[name] = {**latency_summary(samples), "rows": rows.num_rows}
    con.close()
    return out


# -- the benchmark ------------------------------------------------------------------------------


def _figures(run: int, live: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    lat, lat4 = live["latency"], live["latency_4_clients"]
    r0, r4 = live["ingest_alone"]["rate"], live["ingest_4_clients"]["rate"]
    return {
        "run": run,
        "last100_p50_ms": lat["last100"]["p50"],
        "last100_p99_ms": lat["last100"]["p99"],
        "bars_p50_ms": lat["bars"]["p50"],
        "bars_p99_ms": lat["bars"]["p99"],
        "vwap_p50_ms": lat["vwap"]["p50"],
        "vwap_p99_ms": lat["vwap"]["p99"],
        "freshness_p50_ms": live["freshness_with_misses"]["p50"],
        "freshness_p99_ms": live["freshness_with_misses"]["p99"],
        "freshness_misses": live["freshness_misses"],
        "last100_p99_ms_4_clients": lat4.get("last100", {}).get("p99"),
        "bars_p99_ms_4_clients": lat4.get("bars", {}).get("p99"),
        "vwap_p99_ms_4_clients": lat4.get("vwap", {}).get("p99"),
        "ingest_rate_alone": r0,
        "ingest_rate_4_clients": r4,
        "ingest_ratio_4_clients": _r(r4 / r0, 3) if r0 and r4 is not None else None,
        "duckdb_last100_p50_ms": base["last100"]["p50"],
        "duckdb_bars_p50_ms": base["bars"]["p50"],
        "duckdb_vwap_p50_ms": base["vwap"]["p50"],
        "buffer_rows_at_start": live["buffer_rows_at_start"],
        "buffer_rows_at_end": live["buffer_rows_at_end"],
    }


def run_query_bench(
    settings: Settings,
    out: Path,
    repeat: int = 1,
    history_rows: int = 10_000_000,
    history_commits: int = 200,
    live_trades: int = 500_000,
    sustainable_rate: float | None = None,
    load_fraction: float = 0.5,
    window_s: float = 15.0,
    console: Console | None = None,
) -> dict[str, Any]:
    """Write the history once, then ``repeat`` live runs and baselines; JSON to ``out``, tables printed."""
    console = console or Console(stderr=True)
    run_id = uuid.uuid4().hex[:6]
    counts = {"last100": 300, "bars": 150, "vwap": 20}
    results: dict[str, Any] = {
        "run_id": run_id,
        "started_at": datetime.now().astimezone().isoformat(),
        "params": {
            "repeat": repeat,
            "history_rows": history_rows,
            "history_commits": history_commits,
            "live_trades_min": live_trades,
            "load_fraction": load_fraction,
            "window_s": window_s,
            "symbol": SYMBOL,
            "day": DAY.isoformat(),
            "clients": CLIENTS,
            "latency_counts": counts,
            "baseline_counts": {"last100": 20, "bars": 20, "vwap": 10},
            "queries": _queries(SYMBOL, DAY),
        },
        "targets": [f"{t.figure} {t.op} {t.bound:g}" for t in TARGETS],
        "runs": [],
    }
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="k2-bench-query-") as tmp:
        work = Path(tmp)
        warehouse = work / "history-warehouse"
        hist_s = settings.model_copy(
            update={"iceberg": settings.iceberg.model_copy(update={"warehouse": str(warehouse), "uri": ""})}
        )
        console.print(f"[bold]history: {history_rows:,} trades in {history_commits} commits[/]")
        results["history"] = _write_history(hist_s, history_rows, history_commits)
        console.print(f"  {results['history']}")
        if sustainable_rate is None:
            console.print("[bold]sustainable rate: ingest drains a 1,000,000-message backlog[/]")
            results["sustainable"] = _sustainable_rate(settings, work, run_id, 1_000_000)
            sustainable_rate = float(results["sustainable"]["rate"])
        else:
            results["sustainable"] = {"rate": sustainable_rate, "source": "given"}
        rate = load_fraction * sustainable_rate
        results["params"].update({"sustainable_rate": sustainable_rate, "feed_rate": rate})
        plan = _Plan(rate, live_trades, window_s, counts, 50, 60.0)
        for n in range(1, repeat + 1):
            console.print(f"[bold]run {n}/{repeat}: live phases[/]")
            run: dict[str, Any] = {"run": n}
            try:
                run["live"] = _run_live(settings, work, warehouse, f"{run_id}r{n}", plan, console)
                console.print(f"[bold]run {n}/{repeat}: DuckDB read_parquet baseline[/]")
                run["duckdb"] = _baseline(warehouse, results["params"]["baseline_counts"])
                f = _figures(n, run["live"], run["duckdb"])
                run["targets"] = evaluate(f)
                figures.append(f)
                console.print(_run_line(f))
            except Exception as e:  # one failed repeat must not lose the others' figures
                console.print(f"[red]run {n} failed: {e}[/]")
                run["error"] = str(e)
            results["runs"].append(run)
            _write(out, {**results, "partial": True})
    results["summary"] = summarize_runs(figures) if figures else None
    results["machine"] = {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    _write(out, results)
    if results["summary"]:
        console.print(render(results), width=160)
    return results


def _write(out: Path, results: Mapping[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def _run_line(f: Mapping[str, Any]) -> str:
    return (
        f"  last100 p50/p99 {f['last100_p50_ms']}/{f['last100_p99_ms']} ms, bars {f['bars_p50_ms']}/"
        f"{f['bars_p99_ms']} ms, vwap {f['vwap_p50_ms']}/{f['vwap_p99_ms']} ms, freshness "
        f"{f['freshness_p50_ms']}/{f['freshness_p99_ms']} ms, ingest {f['ingest_rate_alone']} -> "
        f"{f['ingest_rate_4_clients']} rows/s with 4 clients ({f['ingest_ratio_4_clients']})"
    )


def render(results: Mapping[str, Any]) -> Table:
    summary = results["summary"]
    t = Table(title=f"k2 bench query (run {results['run_id']}): median (min-max) of {summary['runs']} run(s)",
              title_justify="left")  # fmt: skip
    for col in ("figure", "median", "min", "max", "target", "met (median)", "held in runs"):
        t.add_column(col, justify="right")
    verdicts = summary["targets"]
    for k, v in summary["figures"].items():
        tv = verdicts.get(k)
        t.add_row(
            k, _fmt(v["median"]), _fmt(v["min"]), _fmt(v["max"]),
            tv["target"] if tv else "", ("yes" if tv["met_by_median"] else "NO") if tv else "",
            f"{tv['held']}/{tv['runs']}" if tv else "",
        )  # fmt: skip
    return t


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:,.4g}" if isinstance(x, float) else f"{x:,}"
