"""``k2 bench ingest``: end-to-end ingest throughput against its own ceiling, in one run.

For each scenario (ASX replay, simulated load) on fresh topics and a fresh warehouse:

- **end to end**: an ingest process is started, then the feed produces at full speed; the rate is
  rows landed ÷ (last commit that landed rows - first message produced). Producer, broker and
  ingest share the machine, as they would on one box.
- **drain**: a second ingest, fresh warehouse and group, reads the now-full topics: rows ÷ (last
  commit - first batch consumed). This is what k2 adds on top of reading Kafka.
- **ceiling**: a bare confluent-kafka ``consume(10000)`` loop over the same topics, no processing.

Ratios are k2 ÷ ceiling from the same run; absolute rates on a shared machine are noisy, so
``repeat`` runs every scenario several times and the summary reports the median and the range of
each measure (each ratio is still taken within one run, then the median of those). Also
measured: peak RSS of the ingest process, and append latency after many commits (first 10 vs
last 10 of ``commits`` appends, with the same snapshot expiry the committer runs).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from k2.bench.harness import broker_process, child_env, cpu_seconds
from k2.broker.topics import ensure_k2_topics
from k2.config import IcebergSettings, Settings, TopicNames
from k2.ingest.consumer import consumer_config
from k2.ingest.pool import wait_for_members
from k2.ingest.process import freeze_startup_heap
from k2.lake import TableWriter, ensure_tables, open_catalog
from k2.lake.maintenance import expire_snapshots
from k2.lake.tables import market_arrow_schema

__all__ = ["run_ingest_bench"]


@dataclass
class ScenarioResult:
    name: str
    processes: int  # ingest processes in the group (the ceiling is always one bare loop)
    produced: int
    rows_landed: int
    e2e_seconds: float
    e2e_rate: float
    drain_seconds: float
    drain_rate: float
    ceiling_rate: float
    e2e_ratio: float
    drain_ratio: float
    ingest_peak_rss_mb: float  # sum of the processes' peaks
    producer_rate: float
    # CPU seconds during the e2e run: feed (first send to flush), broker (whole ingest run),
    # ingest (all processes, start-up included). Two cores give 2 CPU-s per wall second.
    cpu_s: dict[str, float | None]


def _start_ingest(s: Settings, report: Path, idle_s: float, processes: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "k2.cli", "ingest", "--exit-when-idle", str(idle_s), "--report", str(report)]
    cmd += ["--processes", str(processes)]
    return subprocess.Popen(cmd, env=child_env(s), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ingest(proc: subprocess.Popen[bytes], report: Path, timeout: float = 900) -> dict[str, Any]:
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"ingest failed ({proc.returncode}): {err.decode()[-2000:]}")
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def _children_cpu() -> float:
    """CPU of waited-for descendants (the ingest process and, through it, its pool children)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bare_consume_rate(s: Settings, expected: int) -> float:
    """The ceiling: consume(10000) from the beginning of the data topics, no processing."""
    consumer = Consumer(
        consumer_config(s.kafka, f"bench-ceiling-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False})
    )
    tps = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in s.kafka.topics.data_topics()
        for p in range(s.kafka.partitions)
    ]
    consumer.assign(tps)
    got, first = 0, None
    deadline = time.monotonic() + 300
    while got < expected and time.monotonic() < deadline:
        msgs = consumer.consume(10000, 1.0)
        if msgs and first is None:
            first = time.perf_counter()
        got += len(msgs)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    return got / elapsed if elapsed > 0 else 0.0


def _scenario_settings(base: Settings, name: str, work: Path, run_id: str, suffix: str = "") -> Settings:
    prefix = f"bench-{run_id}-{name}"
    topics = TopicNames(
        trades=f"{prefix}-trades",
        quotes=f"{prefix}-quotes",
        reference=f"{prefix}-reference",
        dlq=f"{prefix}-dlq",
    )
    kafka = base.kafka.model_copy(update={"topics": topics, "group_id": f"{prefix}-ingest{suffix}"})
    iceberg = base.iceberg.model_copy(
        update={"warehouse": str(work / f"{run_id}-{name}{suffix}-warehouse"), "uri": ""}
    )
    # Throughput at NORMAL: the feed outruns ingest on purpose here, and the backlog it builds
    # must be drained, not shed or deferred (``k2 bench degrade`` measures degradation).
    degradation = base.degradation.model_copy(update={"enabled": False})
    return base.model_copy(update={"kafka": kafka, "iceberg": iceberg, "degradation": degradation})


def _run_scenario(
    base: Settings, name: str, produce: Any, work: Path, run_id: str, processes: int
) -> ScenarioResult:
    label = f"{name}-p{processes}"
    s = _scenario_settings(base, label, work, run_id)
    ensure_k2_topics(s.kafka.bootstrap_servers, s.kafka.topics, s.kafka.partitions)
    report = work / f"{label}-ingest.json"
    broker = broker_process(s)
    broker0, ingest0 = cpu_seconds(broker), _children_cpu()
    # The idle exit must outlast the feed's own set-up (rendering messages before the first send).
    proc = _start_ingest(s, report, idle_s=5.0, processes=processes)
    wait_for_members(s.kafka, processes)
    feed = produce(s)
    ing = _wait_ingest(proc, report)
    broker1, ingest1 = cpu_seconds(broker), _children_cpu()
    feed_start = datetime.fromisoformat(feed.started_at).timestamp()
    rows = sum(ing["landed"].values())
    e2e = ing["last_committed_at"] - feed_start

    d = _scenario_settings(base, label, work, run_id, suffix="-drain")
    drain_report = work / f"{label}-drain.json"
    drain = _wait_ingest(_start_ingest(d, drain_report, idle_s=1.0, processes=processes), drain_report)
    drain_s = drain["last_committed_at"] - drain["first_consumed_at"]
    ceiling = bare_consume_rate(s, feed.produced_total)
    e2e_rate, drain_rate = rows / e2e, sum(drain["landed"].values()) / drain_s
    return ScenarioResult(
        name=name,
        processes=processes,
        produced=feed.produced_total,
        rows_landed=rows,
        e2e_seconds=round(e2e, 3),
        e2e_rate=round(e2e_rate),
        drain_seconds=round(drain_s, 3),
        drain_rate=round(drain_rate),
        ceiling_rate=round(ceiling),
        e2e_ratio=round(e2e_rate / ceiling, 3),
        drain_ratio=round(drain_rate / ceiling, 3),
        ingest_peak_rss_mb=round(max(ing["peak_rss_bytes"], drain["peak_rss_bytes"]) / 2**20, 1),
        producer_rate=round(feed.messages_per_second),
        cpu_s={
            "feed": feed.cpu_s,
            "broker": None if broker0 is None or broker1 is None else round(broker1 - broker0, 2),
            "ingest": round(ingest1 - ingest0, 2),
        },
    )


def append_latency(cfg: IcebergSettings, commits: int, rows_per_commit: int = 1000) -> dict[str, float]:
    """Append latency of the first 10 vs the last 10 of ``commits`` appends, with snapshot expiry."""
    catalog = open_catalog(cfg)
    table = ensure_tables(catalog, cfg)["trades"]
    writer = TableWriter(table, "bench", "bench")
    schema = market_arrow_schema("trades")
    now_us = time.time_ns() // 1000
    n = rows_per_commit
    base_cols: dict[str, Any] = {
        "schema_version": [1] * n,
        "exchange": ["SIM"] * n,
        "symbol": [f"S{i % 50:03d}" for i in range(n)],
        "session": [20260101] * n,
        "price": [10.0] * n,
        "qty": [1] * n,
        "conditions": [[]] * n,
        "trade_id": [str(i) for i in range(n)],
        "venue": [None] * n,
        "kafka_partition": [0] * n,
    }
    latencies: list[float] = []
    freeze_startup_heap()  # as the ingest process does before it starts committing
    for c in range(commits):
        cols = dict(base_cols)
        cols["seq"] = list(range(c * n + 1, c * n + n + 1))
        cols["ts"] = [now_us + c * n + i for i in range(n)]
        cols["ingest_ts"] = [now_us] * n
        cols["kafka_offset"] = list(range(c * n, c * n + n))
        rows = pa.Table.from_pydict(cols, schema=schema)
        started = time.perf_counter()
        writer.commit(rows, {0: (c + 1) * n}, {0: c * n if c else None})
        latencies.append(time.perf_counter() - started)
        if (c + 1) % cfg.maintenance_every_commits == 0:
            expire_snapshots(table, 0, cfg.keep_min_snapshots)
    first, last = statistics.median(latencies[:10]), statistics.median(latencies[-10:])
    return {
        "commits": commits,
        "first10_median_ms": round(first * 1000, 1),
        "last10_median_ms": round(last * 1000, 1),
        "ratio_last_to_first": round(last / first, 2),
        "snapshots_kept": len(table.metadata.snapshots),
    }


def run_ingest_bench(
    settings: Settings,
    out: Path,
    sim_messages: int = 1_000_000,
    commits: int = 2000,
    processes: int = 2,
    repeat: int = 1,
    console: Console | None = None,
) -> dict[str, Any]:
    from k2.feeds.asx import replay_asx
    from k2.feeds.simulator import SimulatorConfig, simulate

    console = console or Console(stderr=True)
    run_id = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {"run_id": run_id, "started_at": datetime.now().astimezone().isoformat()}
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as tmp:
        work = Path(tmp)
        scenarios = [
            ("asx", lambda s: replay_asx(s, speed=None, progress=False)),
            (
                "sim",
                lambda s: simulate(
                    s, SimulatorConfig(rate=0, messages=sim_messages, seed=1), progress=False, prerender=True
                ),
            ),
        ]
        results["scenarios"] = []
        for run in range(repeat):
            for name, produce in scenarios:
                for n in sorted({1, processes}):
                    console.print(f"[bold]scenario {name}, {n} ingest process(es), run {run + 1}/{repeat}[/]")
                    result = _run_scenario(settings, name, produce, work, f"{run_id}r{run}", n)
                    results["scenarios"].append({"run": run + 1, **asdict(result)})
        results["summary"] = summarize(results["scenarios"])
        console.print(f"[bold]append latency over {commits} commits[/]")
        lat_cfg = settings.iceberg.model_copy(
            update={"warehouse": str(work / "latency-warehouse"), "uri": ""}
        )
        results["append_latency"] = append_latency(lat_cfg, commits)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(render(results), width=150)
    return results


_SUMMARIZED = ("e2e_rate", "drain_rate", "ceiling_rate", "e2e_ratio", "drain_ratio")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, processes): median, min and max of each rate and ratio over the runs."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["name"], r["processes"]), []).append(r)
    out = []
    for (name, procs), rs in groups.items():
        row: dict[str, Any] = {"name": name, "processes": procs, "runs": len(rs)}
        for k in _SUMMARIZED:
            values = [r[k] for r in rs]
            row[k] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        row["ingest_peak_rss_mb"] = max(r["ingest_peak_rss_mb"] for r in rs)
        out.append(row)
    return out


def render(results: dict[str, Any]) -> Table:
    t = Table(title=f"k2 bench ingest (run {results['run_id']})", title_justify="left")
    cols = ["scenario", "procs", "produced", "landed", "e2e msg/s", "drain msg/s", "ceiling msg/s",
            "e2e/ceil", "drain/ceil", "peak RSS MB", "CPU s feed/broker/ingest"]  # fmt: skip
    for c in cols:
        t.add_column(c, justify="right")
    for r in results["scenarios"]:
        cells = [f"{r[k]:,}" for k in ("produced", "rows_landed", "e2e_rate", "drain_rate", "ceiling_rate")]
        ratios = [f"{r['e2e_ratio']:.2f}", f"{r['drain_ratio']:.2f}", str(r["ingest_peak_rss_mb"])]
        cpu = "/".join("-" if v is None else f"{v:.1f}" for v in r["cpu_s"].values())
        t.add_row(r["name"], str(r["processes"]), *cells, *ratios, cpu)
    if any(s["runs"] > 1 for s in results.get("summary", [])):
        for s in results["summary"]:
            rates = [
                f"{s[k]['median']:,.0f} ({s[k]['min']:,.0f}-{s[k]['max']:,.0f})"
                for k in ("e2e_rate", "drain_rate", "ceiling_rate")
            ]
            ratios = [
                f"{s[k]['median']:.2f} ({s[k]['min']:.2f}-{s[k]['max']:.2f})"
                for k in ("e2e_ratio", "drain_ratio")
            ]
            t.add_row(f"{s['name']} median of {s['runs']}", str(s["processes"]), "", "", *rates, *ratios,
                      str(s["ingest_peak_rss_mb"]), "")  # fmt: skip
    lat = results["append_latency"]
    t.caption = (
        f"append latency: first 10 {lat['first10_median_ms']} ms, last 10 {lat['last10_median_ms']} ms "
        f"after {lat['commits']} commits (x{lat['ratio_last_to_first']})"
    )
    return t
