"""The demo's own world: settings that point every file, topic and port away from a user's data.

``demo_settings`` is pure: from the user's settings it keeps what tunes k2 (ingest, degradation,
shedding, feeds, logging, API limits) and replaces everything that names data: the catalog is an
SQLite catalog with its warehouse under the work dir, the status directory and the broker's state
live there too, topics and the consumer group carry a per-run prefix, and the API listens on a
port of its own. ``prepare_workdir`` wipes only a directory an earlier demo run marked as its own.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from k2.config import IcebergSettings, Settings, TopicNames
from k2.errors import ConfigError

__all__ = ["DemoOptions", "demo_settings", "free_port", "is_demo_workdir", "prepare_workdir"]

_MARKER = ".k2-demo-workdir"
# Time travel in section 7 reads snapshots of section 2; an interactive run may pause for long.
_KEEP_SNAPSHOTS_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class DemoOptions:
    out: Path  # charts and summary.json
    workdir: Path  # warehouse, status files, the broker's data: wiped at the start of each run
    interactive: bool = False  # wait for Enter between sections
    fast: bool = False  # shorter commit interval in section 3: the whole run under 3 minutes
    bootstrap: str | None = None  # use this Kafka cluster instead of starting a broker
    broker_port: int | None = None  # start the broker here (controller on the next port)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def demo_settings(base: Settings, options: DemoOptions, run_id: str, api_port: int) -> Settings:
    """Settings for one demo run: ``base``'s tuning, the demo's own places (see module docstring)."""
    work = options.workdir.resolve()
    broker = base.broker
    if options.broker_port is not None:
        broker = broker.model_copy(
            update={"port": options.broker_port, "controller_port": options.broker_port + 1}
        )
    broker = broker.model_copy(update={"state_dir": work / "broker"})
    prefix = f"demo-{run_id}-"
    topics = TopicNames(
        trades=f"{prefix}trades", quotes=f"{prefix}quotes", reference=f"{prefix}reference", dlq=f"{prefix}dlq"
    )
    kafka = base.kafka.model_copy(
        update={
            "bootstrap_servers": options.bootstrap or f"{broker.host}:{broker.port}",
            "topics": topics,
            "group_id": f"{prefix}ingest",
        }
    )
    iceberg = IcebergSettings(
        type="sql",
        warehouse=str(work / "warehouse"),
        expire_snapshots_older_than_s=_KEEP_SNAPSHOTS_S,
    )
    ingest = base.ingest.model_copy(
        update={"status_dir": work / "status", "metrics_port": 0, "writer_id": "", "processes": 1}
    )
    live = base.live.model_copy(update={"port": 0, "endpoints": []})
    api = base.api.model_copy(update={"host": "127.0.0.1", "port": api_port, "api_keys": []})
    return base.model_copy(
        update={
            "broker": broker,
            "kafka": kafka,
            "iceberg": iceberg,
            "ingest": ingest,
            "live": live,
            "api": api,
        }
    )


def is_demo_workdir(workdir: Path) -> bool:
    return (workdir / _MARKER).exists()


def prepare_workdir(workdir: Path) -> None:
    """An empty work dir marked as the demo's.

    Raises:
        ConfigError: ``workdir`` holds files and no earlier demo run marked it: never wiped.
    """
    if workdir.exists() and any(workdir.iterdir()):
        if not is_demo_workdir(workdir):
            raise ConfigError(
                f"{workdir} is not empty and was not made by k2 demo; give an empty or new --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).write_text("made by k2 demo; wiped at the start of the next run\n")
