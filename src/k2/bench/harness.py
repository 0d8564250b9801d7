"""What every benchmark needs around the code it measures: child-process environments and CPU time.

Benchmarks run ingest, feeds and bare consumers as child processes with settings passed through
``K2_*`` variables (``settings_env``), and attribute CPU seconds to the broker JVM found by its
listening port.
"""

from __future__ import annotations

import contextlib
import os

import psutil

from k2.config import Settings, settings_env

__all__ = ["broker_process", "child_env", "cpu_seconds"]


def child_env(s: Settings, log_level: str = "WARNING") -> dict[str, str]:
    """The environment of a child process that rebuilds exactly ``s``, logging JSON at ``log_level``."""
    return {**os.environ, **settings_env(s), "K2_LOG__FORMAT": "json", "K2_LOG__LEVEL": log_level}


def broker_process(s: Settings) -> psutil.Process | None:
    """The broker JVM listening on the bootstrap port (for its CPU time), if it runs here."""
    port = int(s.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        if "kafka.Kafka" not in " ".join(proc.info["cmdline"] or []):
            continue
        with contextlib.suppress(psutil.Error):
            if any(c.laddr.port == port and c.status == "LISTEN" for c in proc.net_connections("tcp")):
                return proc
    return None


def cpu_seconds(proc: psutil.Process | None) -> float | None:
    """User + system CPU seconds of ``proc`` so far; None if it is gone or unknown."""
    if proc is None:
        return None
    with contextlib.suppress(psutil.Error):
        t = proc.cpu_times()
        return float(t.user + t.system)
    return None
