"""An app over the fake engine, with a manual clock for the rate limiter."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from api_fake_engine import FakeEngine, ManualClock
from fastapi import FastAPI
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.config import ApiSettings
from k2.observability import Metrics


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_client(engine: FakeEngine, clock: ManualClock) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a started TestClient over the fake engine."""
    clients: list[TestClient] = []

    def make(**settings: object) -> TestClient:
        app = build_app(engine, clock, **settings)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def build_app(engine: FakeEngine, clock: ManualClock, **settings: object) -> FastAPI:
    return create_app(engine, ApiSettings(**settings), metrics=Metrics(), clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
