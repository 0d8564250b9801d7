"""What a running ingest process says about itself: a small JSON file rewritten every second or so.

``k2 status`` reads every file in the status directory (one per process, named by writer id),
so an operator sees each process's degradation level, lag, memory and buffer, and the pending
backfill, without a metrics stack. Written atomically (temp file + rename), so a reader never
sees half a file, and removed when the process stops cleanly; a file whose process crashed stays
and is reported stale by its ``updated_at`` and pid.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["IngestStatus", "read_statuses", "write_status"]


@dataclass(slots=True)
class IngestStatus:
    writer: str
    pid: int
    updated_at: float  # wall clock, epoch seconds
    level: int  # k2.degradation.Level
    level_name: str
    level_since: float | None  # monotonic seconds of this process; see updated_at for wall time
    lag: int
    memory: float  # RSS / memory budget
    memory_budget_bytes: int
    buffer_rows: int
    buffer_bytes: int
    paused: bool
    pending_backfill: int  # messages shed and not yet backfilled, in owned partitions
    oldest_pending_since: float | None  # wall clock of the oldest pending shed message
    shed: int
    backfilled: int
    deferred_lost: int
    partitions: list[str] = field(default_factory=list)
    live_endpoint: str | None = None  # grpc://host:port serving this process's live buffer
    metrics_endpoint: str | None = None  # http://host:port/metrics serving its Prometheus metrics


def write_status(directory: Path, status: IngestStatus) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{status.writer}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(status), f)
    os.replace(tmp, path)
    return path


def read_statuses(directory: Path) -> list[IngestStatus]:
    """Every process's last status in ``directory``, newest first; unreadable files are skipped."""
    out: list[IngestStatus] = []
    if not directory.is_dir():
        return out
    for path in directory.glob("*.json"):
        try:
            out.append(IngestStatus(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(out, key=lambda s: s.updated_at, reverse=True)
