"""CORS: only settings.cors_origins may call from a browser; preflights need no key."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

ORIGIN = "https://dash.example.com"


def _preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options(
        "/v1/trades",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )


def test_preflight_from_an_allowed_origin(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=[ORIGIN], api_keys=["k"])
    r = _preflight(client, ORIGIN)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "X-API-Key".lower() in r.headers["access-control-allow-headers"].lower()


def test_preflight_from_another_origin_is_refused(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=[ORIGIN])
    r = _preflight(client, "https://evil.example.net")
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_allowed_origin_can_read_coverage_headers(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=[ORIGIN])
    r = client.get("/v1/trades", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "X-K2-Coverage" in r.headers["access-control-expose-headers"]


def test_no_origins_configured_means_no_cors_headers(client: TestClient) -> None:
    r = client.get("/v1/trades", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
