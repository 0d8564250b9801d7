"""``k2 ingest --processes N``: several ingest processes on one host, in one consumer group.

One Python process is bounded by one core for ``consume()`` and decoding (the GIL), so a host
with more cores runs more processes and lets Kafka's group protocol split the partitions. Each
child is a complete ``k2 ingest`` (its own tracker, dedup, buffer and committer, its own writer
id), exactly as if it ran on another host: nothing here is needed for correctness, which rests
on per-partition state and the continuity check of every commit (the catalog serialises
concurrent commits to one table and ``TableWriter`` re-checks before retrying).

The parent only starts the children, forwards SIGINT/SIGTERM, waits, and merges their reports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from k2.config import KafkaSettings
from k2.ingest.report import IngestReport
from k2.logs import get_logger

__all__ = ["PoolResult", "run_pool", "wait_for_members"]


@dataclass(slots=True)
class PoolResult:
    report: IngestReport
    exit_codes: list[int]


def child_command(
    index: int,
    writer_id: str,
    report: Path,
    config: Path | None,
    exit_when_idle: float | None,
    max_seconds: float | None,
) -> list[str]:
    cmd = [sys.executable, "-m", "k2.cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += ["ingest", "--processes", "1", "--writer-id", f"{writer_id}-{index}", "--report", str(report)]
    if exit_when_idle is not None:
        cmd += ["--exit-when-idle", str(exit_when_idle)]
    if max_seconds is not None:
        cmd += ["--max-seconds", str(max_seconds)]
    return cmd


def child_ports(index: int, metrics_port: int, live_port: int) -> dict[str, str]:
    """Environment giving child ``index`` its own fixed ports (base + index) where a base is set;
    a base of 0 already means "any free port" in every child."""
    env = {}
    if metrics_port:
        env["K2_INGEST__METRICS_PORT"] = str(metrics_port + index)
    if live_port:
        env["K2_LIVE__PORT"] = str(live_port + index)
    return env


def run_pool(
    processes: int,
    config: Path | None,
    writer_id: str | None = None,
    exit_when_idle: float | None = None,
    max_seconds: float | None = None,
    metrics_port: int = 0,
    live_port: int = 0,
) -> PoolResult:
    """Run ``processes`` ingest children to completion; their merged report and exit codes.

    ``metrics_port``/``live_port``: fixed bases (child i listens on base + i) for static scrape
    configs and API endpoint lists; 0 leaves each child on a free port it advertises.
    """
    base = writer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log = get_logger("ingest_pool", writer=base)
    with tempfile.TemporaryDirectory(prefix="k2-ingest-") as tmp:
        reports = [Path(tmp) / f"{i}.json" for i in range(processes)]
        children = [
            subprocess.Popen(
                child_command(i, base, reports[i], config, exit_when_idle, max_seconds),
                env={**os.environ, **child_ports(i, metrics_port, live_port)},
            )
            for i in range(processes)
        ]
        log.info("started", processes=processes, pids=[c.pid for c in children])

        def forward(signum: int, _frame: FrameType | None) -> None:
            for c in children:
                if c.poll() is None:
                    c.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            codes = [c.wait() for c in children]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        done = [IngestReport.from_json(r.read_text()) for r in reports if r.exists()]
    if any(codes):
        log.error("child_failed", exit_codes=codes)
    return PoolResult(IngestReport.merge(done), codes)


def wait_for_members(kafka: KafkaSettings, members: int, timeout: float = 60) -> None:
    """Block until ``members`` consumers of ``kafka.group_id`` hold partitions (all have joined).

    For callers that must not start a feed before the whole pool reads (benchmarks, tests).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    group = kafka.group_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=2)[group].result(timeout=3)
        except (KafkaException, TimeoutError):  # no coordinator or group yet, or a slow answer
            desc = None
        if desc is not None and sum(1 for m in desc.members if m.assignment.topic_partitions) >= members:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{members} ingest processes did not join {group} within {timeout} s")
