"""LiveServer: exactly the buffered rows asked for, with the offsets they cover, over real Flight."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.config import LiveSettings
from k2.ingest.live_server import LiveServer, LiveView, PartitionLive, select_rows, start_live_server
from k2.live_protocol import PING_ACTION, LiveTicket, decode_coverage, encode_coverage

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", TS),
        ("price", pa.float64()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)
PROCESS = {"writer": "w-1", "pid": 4242, "level": 1, "level_name": "SOFT"}
PARTITIONS = {0: PartitionLive(floor=100, consumed=103), 3: PartitionLive(floor=7, consumed=9)}

Row = tuple[str | None, int | None, int]  # symbol, ts (us), offset


def chunk(rows: list[Row], partition: int = 0) -> pa.Table:
    return pa.table(
        {
            "symbol": pa.array([r[0] for r in rows], pa.string()),
            "ts": pa.array([r[1] for r in rows], TS),
            "price": pa.array([float(r[2]) for r in rows], pa.float64()),
            "kafka_partition": pa.array([partition] * len(rows), pa.int32()),
            "kafka_offset": pa.array([r[2] for r in rows], pa.int64()),
        },
        schema=SCHEMA,
    )


def view(*chunks: pa.Table) -> LiveView:
    return LiveView(schema=SCHEMA, chunks=list(chunks), partitions=dict(PARTITIONS), process=dict(PROCESS))


def expected_offsets(chunks: list[pa.Table], ticket: LiveTicket) -> list[int]:
    """The reference rule, row by row (fine in a test)."""
    out = []
    for c in chunks:
        for r in c.to_pylist():
            if ticket.symbols is not None and r["symbol"] not in ticket.symbols:
                continue
            ts = None if r["ts"] is None else int(r["ts"].timestamp() * 1_000_000)
            if ticket.start_us is not None and (ts is None or ts < ticket.start_us):
                continue
            if ticket.end_us is not None and (ts is None or ts >= ticket.end_us):
                continue
            out.append(r["kafka_offset"])
    return out


def addresses(*tables: pa.Table) -> set[int]:
    """Where the tables' data lives: equal sets mean no byte was copied."""
    return {
        b.address
        for t in tables
        for col in t.columns
        for arr in col.chunks
        for b in arr.buffers()
        if b is not None
    }


# --- select_rows: the filter rule, without Flight -------------------------------------------------

SYMBOLS = ["BHP", "CBA", "RIO", None]
rows_st = st.lists(
    st.tuples(st.sampled_from(SYMBOLS), st.one_of(st.none(), st.integers(0, 50)), st.just(0)),
    max_size=12,
)
bound_st = st.one_of(st.none(), st.integers(-5, 55))


@settings(max_examples=200, deadline=None)
@given(
    chunks_rows=st.lists(rows_st, max_size=5),
    symbols=st.one_of(st.none(), st.lists(st.sampled_from(["BHP", "CBA", "RIO", "XYZ"]), max_size=3)),
    start=bound_st,
    end=bound_st,
)
def test_filter_keeps_exactly_the_rows_of_the_symbols_and_time_range(
    chunks_rows: list[list[Row]], symbols: list[str] | None, start: int | None, end: int | None
) -> None:
    offsets = iter(range(10_000))
    chunks = [chunk([(s, ts, next(offsets)) for s, ts, _ in rows]) for rows in chunks_rows]
    ticket = LiveTicket("trades", None if symbols is None else tuple(symbols), start, end)

    out = select_rows(view(*chunks), ticket)

    assert out.schema == SCHEMA
    assert out["kafka_offset"].to_pylist() == expected_offsets(chunks, ticket)
    # Chunks without a matching row are skipped, not sent as empty batches.
    assert all(len(c) > 0 for c in out["kafka_offset"].chunks)


def test_no_filter_passes_the_buffers_through_without_copying() -> None:
    chunks = [chunk([("BHP", 1, 0), ("CBA", 2, 1)]), chunk([("RIO", 3, 2)])]

    out = select_rows(view(*chunks), LiveTicket("trades"))

    assert addresses(out) == addresses(*chunks)


def test_last_keeps_only_the_newest_matching_rows_across_chunks() -> None:
    older = chunk([("BHP", 1, 0), ("CBA", 2, 1), ("BHP", 3, 2)])
    newer = chunk([("BHP", 5, 3), ("CBA", 6, 4), ("BHP", 4, 5)])

    out = select_rows(view(older, newer), LiveTicket("trades", symbols=("BHP",), last=2))

    assert sorted(out["kafka_offset"].to_pylist()) == [3, 5]  # ts 5 and 4, whatever the chunk


def test_last_must_be_a_positive_count() -> None:
    with pytest.raises(ValueError, match="last"):
        LiveTicket.decode(b'{"table": "trades", "last": 0}')


def test_columns_are_projected_in_the_order_asked() -> None:
    out = select_rows(
        view(chunk([("BHP", 10, 0), ("CBA", 20, 1)])),
        LiveTicket("trades", symbols=("CBA",), columns=("kafka_offset", "symbol")),
    )

    assert out.schema.names == ["kafka_offset", "symbol"]
    assert out.to_pylist() == [{"kafka_offset": 1, "symbol": "CBA"}]


def test_no_chunks_gives_an_empty_table_with_the_projected_schema() -> None:
    out = select_rows(view(), LiveTicket("trades", columns=("ts", "symbol")))

    assert out.num_rows == 0
    assert out.schema == pa.schema([("ts", TS), ("symbol", pa.string())])


def test_an_unknown_column_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"unknown columns \['bid'\]"):
        select_rows(view(chunk([("BHP", 1, 0)])), LiveTicket("trades", columns=("symbol", "bid")))


def test_coverage_metadata_round_trips() -> None:
    schema = SCHEMA.with_metadata(encode_coverage(PARTITIONS, PROCESS))

    assert decode_coverage(schema) == (PARTITIONS, PROCESS)


def test_ticket_round_trips() -> None:
    ticket = LiveTicket("quotes", ("BHP",), 1, 2, ("symbol",))

    assert LiveTicket.decode(ticket.encode()) == ticket


# --- over Flight -----------------------------------------------------------------------------------


class Buffers:
    """A stand-in for the ingest app's source: tables -> views, and a switch to make it slow."""

    def __init__(self, views: dict[str, LiveView]) -> None:
        self.views = views
        self.calls = 0
        self.release = threading.Event()
        self.hang = False
        self.broken = False

    def __call__(self, table: str) -> LiveView | None:
        self.calls += 1
        if self.hang:
            self.release.wait(5.0)
        if self.broken:
            raise RuntimeError("lock poisoned")
        return self.views.get(table)


@pytest.fixture
def buffers() -> Buffers:
    return Buffers(
        {
            "trades": view(chunk([("BHP", 10, 100), ("CBA", 20, 101)]), chunk([("BHP", 30, 102)])),
            "quotes": LiveView(schema=SCHEMA, partitions={}, process=dict(PROCESS)),
        }
    )


@pytest.fixture
def server(buffers: Buffers) -> Iterator[tuple[LiveServer, fl.FlightClient]]:
    srv, location = start_live_server(LiveSettings(host="127.0.0.1", port=0), buffers, lambda: dict(PROCESS))
    client = fl.FlightClient(location)
    yield srv, client
    buffers.release.set()
    client.close()
    srv.stop()


def get(client: fl.FlightClient, **ticket: Any) -> pa.Table:
    options = fl.FlightCallOptions(timeout=2.0)
    return client.do_get(fl.Ticket(json.dumps(ticket).encode()), options).read_all()


def test_do_get_answers_the_rows_and_the_offsets_they_cover(
    server: tuple[LiveServer, fl.FlightClient],
) -> None:
    _, client = server

    out = get(client, table="trades", symbols=["BHP"], start_us=None, end_us=30, columns=None)

    assert out["kafka_offset"].to_pylist() == [100]
    assert decode_coverage(out.schema) == (PARTITIONS, PROCESS)


def test_do_get_without_filter_sends_every_buffered_row(server: tuple[LiveServer, fl.FlightClient]) -> None:
    _, client = server

    out = get(client, table="trades")

    assert out["kafka_offset"].to_pylist() == [100, 101, 102]
    assert out.schema.remove_metadata() == SCHEMA


def test_empty_table_answers_an_empty_stream_with_its_schema(
    server: tuple[LiveServer, fl.FlightClient],
) -> None:
    _, client = server

    out = get(client, table="quotes", columns=["symbol", "ts"])

    assert out.num_rows == 0
    assert out.schema.remove_metadata() == pa.schema([("symbol", pa.string()), ("ts", TS)])
    assert decode_coverage(out.schema) == ({}, PROCESS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "ticket is not JSON"),
        (b'["trades"]', "must be a JSON object"),
        (b'{"table": "trades", "start_us": "yesterday"}', "start_us must be null or an integer"),
        (b'{"table": "trades", "symbols": "BHP"}', "symbols must be null or a list of strings"),
        (b'{"table": "trades", "limit": 5}', "unknown keys"),
        (b'{"table": "bars"}', "unknown live table 'bars'"),
        (b'{"table": "trades", "columns": ["bid"]}', "unknown columns"),
    ],
)
def test_a_bad_ticket_is_refused_with_a_clear_message(
    server: tuple[LiveServer, fl.FlightClient], raw: bytes, message: str
) -> None:
    _, client = server

    with pytest.raises(pa.ArrowInvalid, match=message):
        client.do_get(fl.Ticket(raw), fl.FlightCallOptions(timeout=2.0)).read_all()

    assert get(client, table="trades").num_rows == 3  # still serving


def test_a_failing_source_is_a_server_error_not_a_crash(
    server: tuple[LiveServer, fl.FlightClient], buffers: Buffers
) -> None:
    _, client = server
    buffers.broken = True

    with pytest.raises(fl.FlightServerError, match="live source failed for trades"):
        get(client, table="trades")


def test_ping_answers_the_process_facts(server: tuple[LiveServer, fl.FlightClient]) -> None:
    _, client = server

    (result,) = client.do_action(fl.Action(PING_ACTION, b""), fl.FlightCallOptions(timeout=2.0))

    assert json.loads(result.body.to_pybytes()) == PROCESS


def test_start_binds_a_free_port_and_advertises_it(server: tuple[LiveServer, fl.FlightClient]) -> None:
    srv, _ = server

    assert srv.port > 0
    assert srv.location == f"grpc://127.0.0.1:{srv.port}"


def test_stop_does_not_hang_on_a_stuck_call_and_refuses_new_calls(
    server: tuple[LiveServer, fl.FlightClient], buffers: Buffers
) -> None:
    srv, client = server
    buffers.hang = True
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(get(client, table="trades").num_rows)
        except fl.FlightError as e:
            outcome.append(e)

    stuck = threading.Thread(target=call)
    stuck.start()
    while buffers.calls == 0:
        time.sleep(0.01)

    started = time.monotonic()
    finished = srv.stop(timeout_s=0.3)

    assert not finished
    assert time.monotonic() - started < 1.0
    with pytest.raises(fl.FlightUnavailableError):
        fl.FlightClient(srv.location).do_get(fl.Ticket(b"{}"), fl.FlightCallOptions(timeout=1.0)).read_all()
    buffers.release.set()
    assert srv.stop(timeout_s=5.0)  # a second stop waits for the same shutdown
    stuck.join(5.0)
    assert outcome == [3]  # the call in flight was allowed to finish
