"""Engine errors map to 400/408; anything unexpected is a logged, counted 500 and the app lives on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from api_fake_engine import FakeEngine
from fastapi.testclient import TestClient

from k2.errors import QueryRejected, QueryTimeout


def test_query_rejected_is_400_with_its_reason(client: TestClient, engine: FakeEngine) -> None:
    engine.fail["trades"] = QueryRejected("bad_parameter", "unknown symbol format 'b h p'")
    r = client.get("/v1/trades", params={"symbol": "b h p"})
    assert r.status_code == 400
    assert r.json() == {"error": "bad_parameter", "detail": "unknown symbol format 'b h p'"}


def test_sql_rejection_is_counted_by_reason(client: TestClient, engine: FakeEngine) -> None:
    engine.fail["sql"] = QueryRejected("not_select", "only SELECT is allowed")
    r = client.post("/v1/sql", json={"sql": "DROP TABLE trades"})
    assert r.status_code == 400 and r.json()["error"] == "not_select"
    assert 'k2_api_sql_rejected_total{reason="not_select"} 1.0' in client.get("/metrics").text


def test_query_timeout_is_408(client: TestClient, engine: FakeEngine) -> None:
    engine.fail["sql"] = QueryTimeout(10.0)
    r = client.post("/v1/sql", json={"sql": "SELECT * FROM trades"})
    assert r.status_code == 408
    assert r.json() == {"error": "query_timeout", "detail": "query interrupted after 10 s"}


def test_bad_as_of_and_empty_range_are_400(client: TestClient) -> None:
    assert client.get("/v1/trades", params={"as_of": "yesterday"}).status_code == 422  # not its shape
    for as_of in ("2014-03-11T99:00Z", "2014-03-11T03:00:00"):  # its shape, but no time / no offset
        r = client.get("/v1/trades", params={"as_of": as_of})
        assert (r.status_code, r.json()["error"]) == (400, "bad_parameter"), as_of
    r = client.get("/v1/trades", params={"start": "2014-03-11T06:00:00Z", "end": "2014-03-11T00:00:00Z"})
    assert r.json() == {"error": "bad_parameter", "detail": "end must be after start"}


def test_times_must_be_iso_with_an_offset(client: TestClient, engine: FakeEngine) -> None:
    for start in ("2014-03-11T00:00:00", "1394496000", "0.5", "yesterday"):
        r = client.get("/v1/trades", params={"start": start})
        assert r.status_code == 422, start
        assert r.json()["detail"][0]["loc"] == ["query", "start"]
    assert client.get("/v1/trades", params={"day": "0"}).status_code == 422
    assert engine.calls == []


def test_invalid_parameters_are_422_in_the_error_shape(client: TestClient) -> None:
    r = client.get("/v1/trades", params={"limit": "lots", "day": "11/03/2014"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_request"
    assert {tuple(e["loc"]) for e in body["detail"]} == {("query", "limit"), ("query", "day")}


def test_unknown_path_and_method_keep_the_error_shape(client: TestClient) -> None:
    assert client.get("/v1/trade").json() == {"error": "not_found", "detail": "Not Found"}
    r = client.delete("/v1/trades")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert r.headers["allow"] == "GET"


def test_unexpected_exception_is_500_without_traceback_and_counted(
    make_client: Callable[..., TestClient], engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.fail["bars"] = ZeroDivisionError("secret internals /etc/k2")
    client = make_client(api_keys=["key-that-must-not-be-logged"])
    r = client.get("/v1/bars", params={"symbol": "BHP"}, headers={"X-API-Key": "key-that-must-not-be-logged"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "detail": "unexpected server error; it has been logged"}
    assert "secret" not in r.text and "Traceback" not in r.text
    logged = capsys.readouterr()
    assert "unhandled_exception" in logged.out + logged.err
    assert "ZeroDivisionError" in logged.out + logged.err
    assert "key-that-must-not-be-logged" not in logged.out + logged.err
    metrics = client.get("/metrics").text
    assert 'k2_api_errors_total{exception="ZeroDivisionError"} 1.0' in metrics
    assert 'k2_api_requests_total{route="/v1/bars",status="500"} 1.0' in metrics
    # and the app goes on answering
    del engine.fail["bars"]
    r = client.get("/v1/bars", params={"symbol": "BHP"}, headers={"X-API-Key": "key-that-must-not-be-logged"})
    assert r.status_code == 200


def test_a_slow_query_does_not_stall_health(client: TestClient, engine: FakeEngine) -> None:
    engine.gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.get, "/v1/trades")
        while not engine.calls:  # the query is running, blocked inside the engine
            threading.Event().wait(0.01)
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200
        assert not slow.done()
        engine.gate.set()
        assert slow.result(timeout=10).status_code == 200


def test_every_answer_carries_a_request_id_and_a_well_formed_one_is_kept(client: TestClient) -> None:
    fresh = client.get("/v1/trades", params={"symbol": "BHP"}).headers["X-Request-ID"]
    assert fresh and fresh != client.get("/v1/trades", params={"symbol": "BHP"}).headers["X-Request-ID"]

    kept = client.get("/v1/trades", params={"symbol": "BHP"}, headers={"X-Request-ID": "desk-7.order_42"})
    assert kept.headers["X-Request-ID"] == "desk-7.order_42"

    # Anything that could forge a log line or flood it is replaced, not echoed.
    for bad in ("a b", "x" * 65, "id\\nforged"):
        r = client.get("/v1/trades", params={"symbol": "BHP"}, headers={"X-Request-ID": bad})
        assert r.headers["X-Request-ID"] != bad
    # Refusals before routing (here a 404) carry one too.
    assert client.get("/nowhere").headers["X-Request-ID"]


def test_the_request_id_is_in_the_log_of_an_unexpected_error(
    client: TestClient, engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.fail["trades"] = RuntimeError("boom")
    r = client.get("/v1/trades", params={"symbol": "BHP"}, headers={"X-Request-ID": "trace-123"})
    assert r.status_code == 500 and r.headers["X-Request-ID"] == "trace-123"
    logged = capsys.readouterr()
    assert "trace-123" in logged.out + logged.err
