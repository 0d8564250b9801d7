"""Request bodies over max_body_bytes are refused, declared or chunked; SQL text has its own cap."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from api_fake_engine import FakeEngine
from fastapi.testclient import TestClient


def _sql_body(chars: int) -> bytes:
    return json.dumps({"sql": "SELECT " + "1" * chars}).encode()


def test_declared_length_over_the_cap_is_413(
    make_client: Callable[..., TestClient], engine: FakeEngine
) -> None:
    client = make_client(max_body_bytes=100)
    r = client.post("/v1/sql", content=_sql_body(200), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"
    assert engine.calls == []
    assert client.get("/health/live").status_code == 200


def test_chunked_upload_over_the_cap_is_413(
    make_client: Callable[..., TestClient], engine: FakeEngine
) -> None:
    client = make_client(max_body_bytes=100)

    def chunks() -> Iterator[bytes]:
        body = _sql_body(200)
        for i in range(0, len(body), 30):
            yield body[i : i + 30]

    r = client.post("/v1/sql", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413
    assert engine.calls == []


def test_chunked_upload_under_the_cap_is_read_whole(
    make_client: Callable[..., TestClient], engine: FakeEngine
) -> None:
    client = make_client(max_body_bytes=1_000)
    body = _sql_body(50)
    r = client.post(
        "/v1/sql", content=iter([body[:10], body[10:]]), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    assert engine.last_call[1]["text"] == "SELECT " + "1" * 50


def test_sql_over_max_sql_chars_is_400_too_long(
    make_client: Callable[..., TestClient], engine: FakeEngine
) -> None:
    client = make_client(max_sql_chars=20)
    r = client.post("/v1/sql", json={"sql": "SELECT * FROM trades WHERE 1 = 1"})
    assert r.status_code == 400
    assert r.json() == {"error": "too_long", "detail": "32 characters; at most 20"}
    assert engine.calls == []
    assert 'k2_api_sql_rejected_total{reason="too_long"} 1.0' in client.get("/metrics").text


def test_blank_sql_is_400_empty(client: TestClient) -> None:
    r = client.post("/v1/sql", json={"sql": "   "})
    assert r.status_code == 400 and r.json()["error"] == "empty"
