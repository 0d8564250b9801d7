"""Each format round-trips: parse the bytes back and get the engine's rows and coverage."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from api_fake_engine import SNAPSHOT_ID, FakeEngine, bars_table, coverage, trades_table
from fastapi.testclient import TestClient

from k2.api.formats import Format, json_rows, negotiate
from k2.errors import QueryRejected

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"


def _coverage_json() -> dict[str, object]:
    return coverage().to_json()


@pytest.mark.parametrize("how", ["param", "accept"])
def test_arrow_round_trips_rows_types_and_coverage(client: TestClient, how: str) -> None:
    r = (
        client.get("/v1/trades", params={"format": "arrow"})
        if how == "param"
        else client.get("/v1/trades", headers={"Accept": ARROW})
    )
    assert r.status_code == 200 and r.headers["content-type"] == ARROW
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.schema.remove_metadata() == trades_table().schema  # int64 seq, timestamp[us, UTC]...
    assert table.to_pylist() == trades_table().to_pylist()
    assert json.loads(table.schema.metadata[b"k2.coverage"]) == _coverage_json()
    assert table.schema.metadata[b"k2.truncated"] == b"false"


def test_parquet_round_trips_rows_and_coverage(client: TestClient) -> None:
    r = client.get("/v1/bars", params={"symbol": "BHP", "format": "parquet"})
    assert r.status_code == 200 and r.headers["content-type"] == PARQUET
    table = pq.read_table(io.BytesIO(r.content))
    expected = bars_table().to_pylist()
    got = table.to_pylist()
    assert got[0] == expected[0]
    assert got[1]["vwap"] != got[1]["vwap"]  # NaN survives in a binary format
    assert json.loads(table.schema.metadata[b"k2.coverage"])["snapshots"]["trades"] == str(SNAPSHOT_ID)


def test_csv_round_trips_rows_and_puts_coverage_in_headers(client: TestClient) -> None:
    r = client.get("/v1/trades", params={"format": "csv", "limit": 2})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = pacsv.read_csv(io.BytesIO(r.content))
    expected = trades_table().slice(0, 2)
    assert table.column("ts").to_pylist() == expected.column("ts").to_pylist()
    assert table.column("seq").to_pylist() == expected.column("seq").to_pylist()
    assert table.column("price").to_pylist() == expected.column("price").to_pylist()
    assert [json.loads(c) for c in table.column("conditions").to_pylist()] == [["XT"], []]
    assert r.headers["X-K2-Snapshots"] == f"quotes=none,trades={SNAPSHOT_ID}"
    assert r.headers["X-K2-Complete"] == "false"
    assert r.headers["X-K2-Truncated"] == "true"
    assert r.headers["X-K2-Next-Cursor"] == "c2VxPTEwNDUz"
    assert json.loads(r.headers["X-K2-Coverage"]) == _coverage_json()


def test_json_is_the_default_and_carries_the_same_headers(client: TestClient) -> None:
    r = client.get("/v1/trades")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["X-K2-Complete"] == "false"
    assert r.json()["rows"] == json_rows(trades_table())


def test_unknown_format_param_is_400_with_reason(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/trades", params={"format": "xml"})
    assert r.status_code == 400
    assert r.json()["error"] == "unknown_format"
    assert engine.calls == []


def test_accept_matching_no_format_is_406_and_runs_no_query(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/trades", headers={"Accept": "image/png"})
    assert r.status_code == 406
    assert r.json()["error"] == "not_acceptable"
    assert engine.calls == []


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, Format.JSON),
        ("", Format.JSON),
        ("*/*", Format.JSON),
        ("text/html,application/xhtml+xml,*/*;q=0.8", Format.JSON),  # a browser
        ("text/csv", Format.CSV),
        ("application/json;q=0.5, application/vnd.apache.arrow.stream", Format.ARROW),
        ("application/vnd.apache.parquet;q=0.9, text/csv;q=0.9", Format.PARQUET),  # tie: first listed
        ("application/x-parquet", Format.PARQUET),
        ("text/csv;q=0, application/json;q=0", None),
        ("image/png", None),
        ("text/csv;q=abc", None),
    ],
)
def test_negotiate_by_accept(accept: str | None, expected: Format | None) -> None:
    assert negotiate(None, accept) is expected


def test_format_param_overrides_accept() -> None:
    assert negotiate("CSV", "application/json") is Format.CSV
    for bad in ("xlsx", ""):
        with pytest.raises(QueryRejected) as info:
            negotiate(bad, None)
        assert info.value.reason == "unknown_format"


def test_json_rows_convert_zoned_and_naive_timestamps_to_utc() -> None:
    table = pa.table(
        {
            "naive": pa.array([0], pa.timestamp("s")),
            "sydney": pa.array([0], pa.timestamp("ms", tz="Australia/Sydney")),
            "order_id": pa.array([2**63 - 1], pa.int64()),
            "volume": pa.array([2**40], pa.int64()),
            "payload": pa.array([b"\x00\x01"], pa.binary()),
            "tags": pa.array([[1.5, float("inf")]], pa.list_(pa.float64())),
        }
    )
    assert json_rows(table) == [
        {
            "naive": "1970-01-01T00:00:00Z",
            "sydney": "1970-01-01T00:00:00.000Z",
            "order_id": str(2**63 - 1),
            "volume": 2**40,
            "payload": "AAE=",
            "tags": [1.5, None],
        }
    ]


def test_empty_page_keeps_its_columns_in_every_format(client: TestClient, engine: FakeEngine) -> None:
    engine.empty = True
    assert client.get("/v1/trades").json()["rows"] == []
    assert pacsv.read_csv(
        io.BytesIO(client.get("/v1/trades", params={"format": "csv"}).content)
    ).column_names[:2] == ["exchange", "symbol"]
    arrow = client.get("/v1/trades", params={"format": "arrow"}).content
    assert pa.ipc.open_stream(arrow).read_all().schema.remove_metadata() == trades_table().schema
    parquet = client.get("/v1/trades", params={"format": "parquet"}).content
    assert pq.read_table(io.BytesIO(parquet)).num_rows == 0
