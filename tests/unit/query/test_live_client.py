"""LiveClient: every ingest endpoint asked at once; a slow or dead one costs at most its timeout."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from k2.config import LiveSettings
from k2.ingest.live_server import LiveServer, start_live_server
from k2.live_protocol import LiveView, PartitionLive
from k2.query.live_client import BREAKER_OPEN, LiveClient, endpoints_from_status

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [("symbol", pa.string()), ("ts", TS), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())]
)


def trades(partition: int, rows: list[tuple[str, int]], first_offset: int) -> pa.Table:
    return pa.table(
        {
            "symbol": [s for s, _ in rows],
            "ts": pa.array([ts for _, ts in rows], TS),
            "kafka_partition": pa.array([partition] * len(rows), pa.int32()),
            "kafka_offset": pa.array(range(first_offset, first_offset + len(rows)), pa.int64()),
        },
        schema=SCHEMA,
    )


class Process:
    """One ingest process's buffer behind a real Flight server, with switches to make it misbehave."""

    def __init__(self, writer: str, partition: int, rows: list[tuple[str, int]]) -> None:
        self.facts = {"writer": writer, "pid": os.getpid(), "level": 0, "level_name": "NORMAL"}
        self.view = LiveView(
            schema=SCHEMA,
            chunks=[trades(partition, rows, first_offset=50)],
            partitions={partition: PartitionLive(floor=50, consumed=50 + len(rows))},
            process=self.facts,
        )
        self.calls = 0
        self.hang = False
        self.broken = False
        self.release = threading.Event()
        self.server: LiveServer
        self.server, self.location = start_live_server(LiveSettings(port=0), self.source, lambda: self.facts)

    def source(self, table: str) -> LiveView | None:
        self.calls += 1
        if self.hang:
            self.release.wait(5.0)
        if self.broken:
            raise RuntimeError("buffer lock poisoned")
        return self.view if table == "trades" else None

    def stop(self) -> None:
        self.release.set()
        self.server.stop(timeout_s=5.0)


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(writer: str, partition: int, rows: list[tuple[str, int]]) -> Process:
        started.append(Process(writer, partition, rows))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def client_for(*locations: str, **settings: float) -> LiveClient:
    return LiveClient(LiveSettings.model_validate(settings), lambda: list(locations))


def test_two_processes_each_give_their_partitions_rows(processes: Callable[..., Process]) -> None:
    a = processes("w-a", 0, [("BHP", 10), ("CBA", 11)])
    b = processes("w-b", 1, [("BHP", 12), ("RIO", 13), ("BHP", 14)])
    client = client_for(a.location, b.location)

    fetch = client.fetch("trades", symbols=["BHP"], columns=["symbol", "kafka_offset"])

    assert fetch.failed == {}
    by_writer = {p.process["writer"]: p for p in fetch.pieces}
    assert by_writer["w-a"].table.to_pylist() == [{"symbol": "BHP", "kafka_offset": 50}]
    assert by_writer["w-b"].table["kafka_offset"].to_pylist() == [50, 52]
    assert by_writer["w-a"].partitions == {0: PartitionLive(50, 52)}
    assert by_writer["w-b"].partitions == {1: PartitionLive(50, 53)}
    assert by_writer["w-b"].endpoint == b.location
    # The k2 metadata is read into the piece, not left on the rows to be merged.
    assert by_writer["w-a"].table.schema.metadata is None


def test_a_hanging_process_costs_only_its_timeout(processes: Callable[..., Process]) -> None:
    slow = processes("w-slow", 0, [("BHP", 10)])
    fast = processes("w-fast", 1, [("BHP", 11)])
    slow.hang = True
    client = client_for(slow.location, fast.location, timeout_s=0.3)

    started = time.monotonic()
    fetch = client.fetch("trades")
    elapsed = time.monotonic() - started

    assert elapsed < 0.3 + 0.5
    assert [p.process["writer"] for p in fetch.pieces] == ["w-fast"]
    assert set(fetch.failed) == {slow.location}
    assert "Deadline" in fetch.failed[slow.location] or "no answer" in fetch.failed[slow.location]


def test_the_breaker_opens_after_repeated_failures_then_closes_after_its_reset(
    processes: Callable[..., Process],
) -> None:
    p = processes("w-a", 0, [("BHP", 10)])
    p.broken = True
    client = client_for(p.location, breaker_failures=2, breaker_reset_s=0.4)

    first, second = client.fetch("trades"), client.fetch("trades")
    calls_when_opened = p.calls
    started = time.monotonic()
    skipped = client.fetch("trades")

    assert "buffer lock poisoned" in first.failed[p.location]
    assert "buffer lock poisoned" in second.failed[p.location]
    assert skipped.failed == {p.location: BREAKER_OPEN}
    assert p.calls == calls_when_opened  # not even asked
    assert time.monotonic() - started < 0.1
    assert client.breaker_states() == {p.location: "open"}

    p.broken = False
    time.sleep(0.45)
    recovered = client.fetch("trades")

    assert recovered.failed == {}
    assert [piece.table.num_rows for piece in recovered.pieces] == [1]
    assert client.breaker_states() == {p.location: "closed"}


def test_a_refused_ticket_does_not_count_against_the_endpoint(processes: Callable[..., Process]) -> None:
    p = processes("w-a", 0, [("BHP", 10)])
    client = client_for(p.location, breaker_failures=1)

    refused = client.fetch("bars")
    answered = client.fetch("trades")

    assert "unknown live table 'bars'" in refused.failed[p.location]
    assert answered.failed == {}
    assert client.breaker_states() == {p.location: "closed"}


def test_a_stopped_process_is_reported_failed_without_raising(processes: Callable[..., Process]) -> None:
    gone = processes("w-gone", 0, [("BHP", 10)])
    alive = processes("w-alive", 1, [("BHP", 11)])
    gone.stop()
    client = client_for(gone.location, alive.location)

    fetch = client.fetch("trades")

    assert "Unavailable" in fetch.failed[gone.location]
    assert [p.process["writer"] for p in fetch.pieces] == ["w-alive"]


def test_ping_all_gives_facts_or_the_reason(processes: Callable[..., Process]) -> None:
    gone = processes("w-gone", 0, [])
    alive = processes("w-alive", 1, [])
    gone.stop()
    client = client_for(gone.location, alive.location)

    pings = client.ping_all()

    assert pings[alive.location] == alive.facts
    assert isinstance(pings[gone.location], str)
    assert "Unavailable" in pings[gone.location]


def test_an_endpoint_no_longer_discovered_is_forgotten(processes: Callable[..., Process]) -> None:
    a = processes("w-a", 0, [("BHP", 10)])
    b = processes("w-b", 1, [("BHP", 11)])
    current = [a.location, b.location]
    client = LiveClient(LiveSettings(), lambda: list(current))
    client.fetch("trades")

    current.remove(a.location)
    fetch = client.fetch("trades")

    assert [p.endpoint for p in fetch.pieces] == [b.location]
    assert set(client.breaker_states()) == {b.location}


# --- endpoints_from_status -------------------------------------------------------------------------


def write_status(directory: Path, name: str, **doc: object) -> None:
    (directory / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")


def test_endpoints_come_from_fresh_status_files_then_the_configured_ones(tmp_path: Path) -> None:
    now = 1_000.0
    write_status(tmp_path, "w-a", live_endpoint="grpc://127.0.0.1:5001", updated_at=now - 2)
    write_status(tmp_path, "w-b", live_endpoint="grpc://127.0.0.1:5002", updated_at=now - 60)  # stale
    write_status(tmp_path, "w-c", live_endpoint=None, updated_at=now)  # live endpoint disabled
    write_status(tmp_path, "w-d", updated_at=now)  # an older ingest without the field
    write_status(tmp_path, "w-e", live_endpoint="grpc://127.0.0.1:5005", updated_at="recently")
    (tmp_path / "w-f.json").write_text("{half written", encoding="utf-8")
    (tmp_path / "w-g.json").write_bytes(b"\xff\xfe")
    (tmp_path / "w-h.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "w-i.json.tmp").write_text(json.dumps({"live_endpoint": "grpc://x:1", "updated_at": now}))

    found = endpoints_from_status(
        tmp_path, ["grpc://remote:7000", "grpc://127.0.0.1:5001"], stale_after_s=15.0, now=now
    )

    assert found == ["grpc://127.0.0.1:5001", "grpc://remote:7000"]


def test_a_missing_status_dir_gives_the_configured_endpoints(tmp_path: Path) -> None:
    assert endpoints_from_status(tmp_path / "absent", ["grpc://remote:7000"], 15.0, 0.0) == [
        "grpc://remote:7000"
    ]
