"""Every /v1 route forwards its parameters to the engine as typed queries and answers JSON rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from api_fake_engine import BIG_SEQ, SNAPSHOT_ID, FakeEngine, ManualClock
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.config import ApiSettings
from k2.query.spec import AsOf, BarInterval, TimeRange


def test_trades_by_symbol_and_day_forwards_a_typed_query(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/trades", params={"symbol": "BHP", "exchange": "ASX", "day": "2014-03-11"})
    assert r.status_code == 200
    assert engine.last_call == (
        "trades",
        {
            "symbol": "BHP",
            "exchange": "ASX",
            "when": TimeRange(day=date(2014, 3, 11)),
            "last": None,
            "limit": 1_000,  # settings.default_limit
            "cursor": None,
            "as_of": None,
        },
    )
    body = r.json()
    assert [row["trade_id"] for row in body["rows"]] == ["BHP-10452", "BHP-10453", None]
    assert body["truncated"] is False and body["next_cursor"] is None


def test_trades_json_rows_are_javascript_safe(client: TestClient) -> None:
    row = client.get("/v1/trades").json()["rows"][1]
    assert row["seq"] == str(BIG_SEQ)  # a double would round it to 2**53
    assert row["kafka_offset"] == "1188"
    assert row["ts"] == "2014-03-11T00:00:02.000000Z"
    assert row["session"] == "2014-03-11"
    assert row["qty"] == 120 and row["price"] == 36.53 and row["kafka_partition"] == 3
    assert row["conditions"] == []


def test_trades_range_last_cursor_and_as_of_reach_the_engine(client: TestClient, engine: FakeEngine) -> None:
    r = client.get(
        "/v1/trades",
        params={
            "start": "2014-03-11T00:00:00Z",
            "end": "2014-03-11T06:00:00+00:00",
            "last": 2,
            "limit": 1,
            "cursor": "abc",
            "as_of": "4586712930015577412",
        },
    )
    assert r.status_code == 200
    _, call = engine.last_call
    assert call["when"] == TimeRange(
        start=datetime(2014, 3, 11, tzinfo=UTC), end=datetime(2014, 3, 11, 6, tzinfo=UTC)
    )
    assert (call["last"], call["limit"], call["cursor"]) == (2, 1, "abc")
    assert call["as_of"] == AsOf(snapshot_id=SNAPSHOT_ID)
    body = r.json()
    assert body["truncated"] is True and body["next_cursor"] == "c2VxPTEwNDUz"
    assert body["coverage"]["as_of"] == str(SNAPSHOT_ID)


def test_coverage_travels_with_the_rows(client: TestClient) -> None:
    coverage = client.get("/v1/trades").json()["coverage"]
    assert coverage["snapshots"] == {"trades": str(SNAPSHOT_ID), "quotes": None}
    assert coverage["live_from"] == {"trades": {"3": 1187}}
    assert coverage["live_missing"] == ["trades/4"]
    assert coverage["complete"] is False
    assert coverage["deferred"] == [{"topic": "market.trades", "partition": 4, "first": 100, "last": 180}]


def test_quotes(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/quotes", params={"symbol": "BHP", "last": 1})
    assert r.status_code == 200
    assert engine.last_call[0] == "quotes" and engine.last_call[1]["last"] == 1
    assert r.json()["rows"][0]["bid"] == 36.51


def test_bars_use_the_named_interval_and_nan_vwap_is_null(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/bars", params={"symbol": "BHP", "interval": "5-MINUTE-LAST", "day": "2014-03-11"})
    assert r.status_code == 200
    assert engine.last_call[1]["interval"] is BarInterval.MINUTE_5
    rows = r.json()["rows"]
    assert rows[0]["bar_start"] == "2014-03-11T00:00:00.000000Z"
    assert rows[0]["trading_day"] == "2014-03-11"
    assert rows[1]["vwap"] is None


def test_bars_default_to_one_minute_and_need_a_symbol(client: TestClient, engine: FakeEngine) -> None:
    assert client.get("/v1/bars", params={"symbol": "BHP"}).status_code == 200
    assert engine.last_call[1]["interval"] is BarInterval.MINUTE_1
    r = client.get("/v1/bars")
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"
    assert client.get("/v1/bars", params={"symbol": "BHP", "interval": "1m"}).status_code == 422


def test_vwap_splits_the_symbol_list(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/vwap", params={"symbols": "BHP, CBA,,RIO", "day": "2014-03-11"})
    assert r.status_code == 200
    assert engine.last_call[1]["symbols"] == ["BHP", "CBA", "RIO"]
    assert [row["symbol"] for row in r.json()["rows"]] == ["BHP", "CBA", "RIO"]
    client.get("/v1/vwap")
    assert engine.last_call[1]["symbols"] is None


def test_snapshot(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/snapshot", params={"symbols": "BHP"})
    assert r.status_code == 200
    assert engine.last_call == ("snapshot", {"symbols": ["BHP"], "exchange": None})
    assert r.json()["rows"][0]["last_ts"] == "2014-03-11T00:00:03.000000Z"


def test_gaps(client: TestClient, engine: FakeEngine) -> None:
    r = client.get("/v1/gaps", params={"symbol": "BHP", "status": "open", "limit": 5})
    assert r.status_code == 200
    assert engine.last_call == ("gaps", {"symbol": "BHP", "exchange": None, "status": "open", "limit": 5})
    assert r.json()["rows"][0]["first_missing_seq"] == "10455"


def test_status_is_json_safe(client: TestClient) -> None:
    body = client.get("/v1/status").json()
    assert body["ingest"][0]["ratio"] is None  # NaN
    assert body["tables"]["trades"]["snapshot_id"] == str(SNAPSHOT_ID)
    assert body["tables"]["trades"]["updated"] == "2014-03-11T00:00:09Z"


def test_sql_caps_max_rows_at_the_server_limit(
    make_client: Callable[..., TestClient], engine: FakeEngine
) -> None:
    client = make_client(max_rows=2)
    r = client.post("/v1/sql", json={"sql": "SELECT symbol, qty, price FROM trades", "max_rows": 50})
    assert r.status_code == 200
    assert engine.last_call == ("sql", {"text": "SELECT symbol, qty, price FROM trades", "max_rows": 2})
    assert len(r.json()["rows"]) == 2 and r.json()["truncated"] is True
    client.post("/v1/sql", json={"sql": "SELECT 1"})
    assert engine.last_call[1]["max_rows"] == 2


def test_sql_body_rejects_unknown_fields(client: TestClient) -> None:
    r = client.post("/v1/sql", json={"sql": "SELECT 1", "max_row": 5})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "max_row"]


def test_api_caps_rows_an_engine_returns_beyond_max_rows(
    make_client: Callable[..., TestClient], engine: FakeEngine
) -> None:
    client = make_client(max_rows=2, default_limit=2)
    r = client.get("/v1/vwap", params={"symbols": "A,B,C"})  # the fake ignores limits on vwap
    body = r.json()
    assert len(body["rows"]) == 2 and body["truncated"] is True and body["next_cursor"] is None


def test_health_live_and_ready(client: TestClient, engine: FakeEngine) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json() == {"status": "ready", "detail": {"catalog": True}}
    engine.is_ready = False
    r = client.get("/health/ready")
    assert r.status_code == 503
    assert r.json() == {"error": "not_ready", "detail": {"catalog": False}}


def test_ready_check_that_raises_is_not_ready(engine: FakeEngine) -> None:
    def broken() -> tuple[bool, dict[str, object]]:
        raise ConnectionError("catalog down")

    app = create_app(engine, ApiSettings(), ready_check=broken, clock=ManualClock())
    with TestClient(app) as client:
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert r.json() == {"error": "not_ready", "detail": {"exception": "ConnectionError"}}
        assert client.get("/health/live").status_code == 200
