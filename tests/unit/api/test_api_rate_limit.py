"""Token buckets per caller: pure policy tested with explicit times, then the 429 over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from api_fake_engine import ManualClock
from fastapi.testclient import TestClient

from k2.api.rate_limit import RateLimiter, TokenBucket


def test_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token at 2/s
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0


def test_bucket_refills_to_burst_and_no_further() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]


def test_bucket_ignores_a_clock_stepping_back() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) > 0  # no tokens created by going back in time
    assert bucket.take(10.5) == pytest.approx(0.5)


def test_bucket_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0.0, burst=1, now=0.0)


def test_limiter_keeps_callers_apart_and_forgets_idle_ones() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1.0, 1, clock=clock, max_callers=2)
    assert limiter.check("a") == 0.0
    assert limiter.check("a") > 0
    assert limiter.check("b") == 0.0  # b has its own bucket
    clock.now += 5  # both refill completely
    assert limiter.check("c") == 0.0  # at capacity: idle buckets are dropped first
    assert set(limiter._buckets) == {"c"}


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert RateLimiter.retry_after(0.01) == "1"
    assert RateLimiter.retry_after(1.2) == "2"


def test_over_the_limit_is_429_with_retry_after(
    make_client: Callable[..., TestClient], clock: ManualClock
) -> None:
    client = make_client(rate_limit_per_s=0.5, rate_limit_burst=2)
    assert [client.get("/v1/trades").status_code for _ in range(2)] == [200, 200]
    r = client.get("/v1/trades")
    assert r.status_code == 429
    assert r.json()["error"] == "rate_limited"
    assert r.headers["Retry-After"] == "2"  # one token at 0.5/s
    assert client.get("/health/live").status_code == 200  # probes are never limited
    clock.now += 2.0
    assert client.get("/v1/trades").status_code == 200


def test_each_key_has_its_own_bucket(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=["k1", "k2"], rate_limit_per_s=1.0, rate_limit_burst=1)
    assert client.get("/v1/status", headers={"X-API-Key": "k1"}).status_code == 200
    assert client.get("/v1/status", headers={"X-API-Key": "k1"}).status_code == 429
    assert client.get("/v1/status", headers={"X-API-Key": "k2"}).status_code == 200
    # Bad keys are refused before they can spend anyone's tokens.
    assert client.get("/v1/status", headers={"X-API-Key": "bad"}).status_code == 401
