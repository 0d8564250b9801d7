"""Helpers shared by the integration and fault tests: read back what landed, independently of the
ingest code (a fresh catalog), and run ``k2 ingest`` as a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from k2.config import Settings, settings_env
from k2.lake import TABLE_FOR_STREAM, open_catalog

Identity = tuple[str, str, str, int, int]  # (stream, exchange, symbol, session, seq)
STREAM_OF_TABLE = {table: stream for stream, table in TABLE_FOR_STREAM.items()}


def landed_identities(settings: Settings) -> list[Identity]:
    """Every stored message identity, one entry per row (so duplicates show as repeats)."""
    catalog = open_catalog(settings.iceberg)
    out: list[Identity] = []
    for stream, table in TABLE_FOR_STREAM.items():
        rows = (
            catalog.load_table((settings.iceberg.namespace, table))
            .scan(selected_fields=("exchange", "symbol", "session", "seq"))
            .to_arrow()
            .to_pylist()
        )
        out += [(stream, r["exchange"], r["symbol"], r["session"], r["seq"]) for r in rows]
    return out


def gap_ranges(settings: Settings, status: str) -> set[tuple[str, str, str, int, int, int]]:
    """``sequence_gaps`` rows with ``status`` as (stream, exchange, symbol, session, first, last)."""
    catalog = open_catalog(settings.iceberg)
    rows = catalog.load_table((settings.iceberg.namespace, "sequence_gaps")).scan().to_arrow().to_pylist()
    return {
        (STREAM_OF_TABLE[r["table"]], r["exchange"], r["symbol"], r["session"], r["first_seq"], r["last_seq"])
        for r in rows
        if r["status"] == status
    }


def start_ingest(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``k2 ingest`` in a child process; its log goes to a file (a pipe nobody reads would block it)."""
    env = {**os.environ, **settings_env(settings), "K2_LOG__FORMAT": "json"}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "ingest", *args], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
