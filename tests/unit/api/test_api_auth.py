"""API keys: /v1 needs one of settings.api_keys; health and metrics never do."""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pytest
from api_fake_engine import FakeEngine
from fastapi.testclient import TestClient

from k2.api import auth
from k2.api.auth import ApiKeys

KEYS = ["alpha-key-0123", "bravo-key-4567"]


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=KEYS)


def test_missing_key_is_401_and_runs_nothing(keyed: TestClient, engine: FakeEngine) -> None:
    r = keyed.get("/v1/trades")
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "detail": "a valid X-API-Key header is required"}
    assert r.headers["WWW-Authenticate"] == "X-API-Key"
    assert engine.calls == []


def test_wrong_key_is_401(keyed: TestClient) -> None:
    assert keyed.get("/v1/trades", headers={"X-API-Key": "alpha-key-012"}).status_code == 401
    assert keyed.get("/v1/trades", headers={"X-API-Key": ""}).status_code == 401


def test_any_configured_key_is_accepted(keyed: TestClient) -> None:
    for key in KEYS:
        assert keyed.get("/v1/trades", headers={"X-API-Key": key}).status_code == 200


def test_unauthenticated_sql_body_is_not_parsed(keyed: TestClient, engine: FakeEngine) -> None:
    r = keyed.post("/v1/sql", content=b"{not json")
    assert r.status_code == 401  # not 422: the guard answers before the body is read
    assert engine.calls == []


def test_health_metrics_and_docs_need_no_key(keyed: TestClient) -> None:
    for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_no_keys_configured_means_open(client: TestClient) -> None:
    assert client.get("/v1/trades").status_code == 200


def test_openapi_declares_the_key_only_when_keys_are_configured(
    keyed: TestClient, client: TestClient
) -> None:
    assert keyed.get("/openapi.json").json()["components"]["securitySchemes"] == {
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    }
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = ApiKeys(KEYS)
    assert keys.identify(KEYS[0]) is not None
    # No early exit on the first match: the time taken does not say which key matched.
    assert [b for _, b in compared] == [k.encode() for k in KEYS]
    compared.clear()
    assert keys.identify("nope") is None
    assert len(compared) == len(KEYS)


def test_identity_does_not_reveal_the_key() -> None:
    identity = ApiKeys(KEYS).identify(KEYS[1])
    assert identity is not None and KEYS[1] not in identity
    assert identity != ApiKeys(KEYS).identify(KEYS[0])
