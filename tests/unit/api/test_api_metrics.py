"""/metrics exposes k2_api_* by route template, never by raw path."""

from __future__ import annotations

from api_fake_engine import FakeEngine
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.config import ApiSettings
from k2.observability import Metrics


def test_requests_are_counted_and_timed_by_route_template(client: TestClient) -> None:
    client.get("/v1/trades", params={"symbol": "BHP"})
    client.get("/v1/trades", params={"symbol": "CBA"})
    client.get("/v1/bars")  # 422
    client.get("/v1/no-such-route/123")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'k2_api_requests_total{route="/v1/trades",status="200"} 2.0' in text
    assert 'k2_api_requests_total{route="/v1/bars",status="422"} 1.0' in text
    assert 'k2_api_requests_total{route="<unmatched>",status="404"} 1.0' in text
    assert 'k2_api_request_duration_seconds_count{route="/v1/trades"} 2.0' in text
    assert "symbol=BHP" not in text and "no-such-route" not in text


def test_each_app_has_its_own_registry(engine: FakeEngine) -> None:
    # Building twice in one process must not raise "Duplicated timeseries".
    first, second = Metrics(), Metrics()
    app_a = create_app(engine, ApiSettings(), metrics=first)
    create_app(engine, ApiSettings(), metrics=second)
    with TestClient(app_a) as client:
        client.get("/health/live")
    assert first.api_requests.labels(route="/health/live", status="200")._value.get() == 1.0
    assert second.api_requests.labels(route="/health/live", status="200")._value.get() == 0.0
