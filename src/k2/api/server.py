"""``serve``: run the gateway under uvicorn on ``settings.host:settings.port``."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from k2.config import ApiSettings

__all__ = ["serve", "uvicorn_config"]


def uvicorn_config(app: FastAPI, settings: ApiSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # k2's structlog setup (configure_logging at the CLI edge) stays in charge
        access_log=False,  # k2_api_requests_total and the error log say what an access log would
        # The rate limiter keys open-API callers by address: trust the socket's peer, never a
        # client-supplied X-Forwarded-For that would let one caller pose as many.
        proxy_headers=False,
        server_header=False,
    )


def serve(app: FastAPI, settings: ApiSettings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop it gracefully)."""
    uvicorn.Server(uvicorn_config(app, settings)).run()
