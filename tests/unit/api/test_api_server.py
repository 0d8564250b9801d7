"""serve() binds where the settings say, with k2's logging and no trust in forwarded headers."""

from __future__ import annotations

import pytest
from api_fake_engine import FakeEngine

from k2.api import create_app, serve
from k2.api import server as server_module
from k2.config import ApiSettings


def test_uvicorn_config_follows_settings(engine: FakeEngine) -> None:
    settings = ApiSettings(host="0.0.0.0", port=8123)
    app = create_app(engine, settings)
    config = server_module.uvicorn_config(app, settings)
    assert (config.host, config.port) == ("0.0.0.0", 8123)
    assert config.proxy_headers is False and config.access_log is False and config.log_config is None


def test_serve_runs_a_uvicorn_server(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, int]] = []

    def fake_run(self: server_module.uvicorn.Server) -> None:
        ran.append((self.config.host, self.config.port))

    monkeypatch.setattr(server_module.uvicorn.Server, "run", fake_run)
    serve(create_app(engine, ApiSettings(port=8124)), ApiSettings(port=8124))
    assert ran == [("127.0.0.1", 8124)]
