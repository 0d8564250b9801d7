"""``create_app``: the k2 gateway, an ASGI app over one ``Queries`` engine.

Layers, outermost first, and why in that order:

1. ``InstrumentationMiddleware`` counts and times every answer (even the refusals below) and turns
   any unexpected exception into a logged, counted ``500 {"error": "internal"}``.
2. ``CORSMiddleware`` answers preflights from ``cors_origins`` before any key is asked for.
3. ``GuardMiddleware``: ``/v1`` needs a valid ``X-API-Key`` (401), then a token (429).
4. ``BodyLimitMiddleware``: bodies over ``max_body_bytes`` are refused (413) unread.
5. FastAPI's routing and validation; ``QueryRejected`` -> 400, ``QueryTimeout`` -> 408, invalid
   parameters -> 422, all in the ``{"error", "detail"}`` shape of ``error_responses``.

The app owns no engine lifecycle: the caller builds the engine and closes it after serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

import k2
from k2.api.auth import ApiKeys
from k2.api.body_limit import BodyLimitMiddleware
from k2.api.error_responses import ErrorBody, error_response
from k2.api.formats import json_safe
from k2.api.guard import API_KEY_HEADER, GuardMiddleware
from k2.api.instrumentation import InstrumentationMiddleware, plain_traceback
from k2.api.rate_limit import RateLimiter
from k2.api.routes import v1_router
from k2.config import ApiSettings
from k2.errors import QueryRejected, QueryTimeout
from k2.logs import get_logger
from k2.observability import CONTENT_TYPE, Metrics
from k2.query.spec import Queries

__all__ = ["ReadyCheck", "create_app"]

ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]

_log = get_logger("api")

_DESCRIPTION = """\
Market data from Kafka and Apache Iceberg, **history ∪ live**, answered as one table.

Every answer says what it covers (`coverage`): the Iceberg snapshot per table, the Kafka offsets
from which the live part starts, any live partition that could not be read, ingest degradation,
deferred ranges and open sequence gaps. `coverage.complete` is true only when nothing is missing.

Formats: `?format=json|csv|arrow|parquet` or the `Accept` header (JSON by default). Coverage is in
the JSON body, in `X-K2-*` headers for every format, and in the Arrow/Parquet schema metadata
(`k2.coverage`). Errors are always JSON: `{"error": "<reason>", "detail": ...}`.
"""


def create_app(
    engine: Queries,
    settings: ApiSettings,
    *,
    ready_check: ReadyCheck | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The gateway over ``engine``.

    ``ready_check`` decides ``/health/ready`` (default ``engine.ready``); ``metrics`` is where the
    API counts (default: a fresh registry, served at ``/metrics``); ``clock`` drives the rate
    limiter (monotonic seconds; tests inject their own).
    """
    metrics = metrics if metrics is not None else Metrics()
    check_ready: ReadyCheck = ready_check if ready_check is not None else engine.ready
    app = FastAPI(
        title="k2",
        version=k2.__version__,
        description=_DESCRIPTION,
        openapi_tags=[
            {"name": "v1", "description": "Market data queries."},
            {"name": "ops", "description": "Health and metrics, open to probes (no key)."},
        ],
    )
    app.state.metrics = metrics
    v1 = v1_router(engine, settings, metrics)
    app.include_router(v1)
    _add_ops_routes(app, check_ready, metrics)
    _add_exception_handlers(app)

    # add_middleware puts each new layer outside the previous one: innermost first.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        GuardMiddleware,
        keys=ApiKeys(settings.api_keys),
        limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst, clock=clock),
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=[API_KEY_HEADER, "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=[
            "X-K2-Coverage",
            "X-K2-Snapshots",
            "X-K2-Complete",
            "X-K2-Truncated",
            "X-K2-Next-Cursor",
            "X-K2-As-Of",
            "X-Request-ID",
            "Retry-After",
        ],
    )
    # FastAPI keeps an included router as one opaque entry: hand the middleware its routes.
    routes = [*v1.routes, *(r for r in app.router.routes if hasattr(r, "path"))]
    app.add_middleware(InstrumentationMiddleware, routes=routes, metrics=metrics)
    return app


def _add_ops_routes(app: FastAPI, check_ready: ReadyCheck, metrics: Metrics) -> None:
    not_ready = {
        "model": ErrorBody,
        "description": "The engine cannot answer (e.g. catalog unreachable).",
        "content": {"application/json": {"example": {"error": "not_ready", "detail": {"catalog": False}}}},
    }

    @app.get("/health/live", tags=["ops"], summary="Liveness", description="The process answers.")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get(
        "/health/ready",
        tags=["ops"],
        summary="Readiness",
        description="200 when the engine can answer queries, 503 (with the facts) when not.",
        responses={
            200: {
                "content": {"application/json": {"example": {"status": "ready", "detail": {"catalog": True}}}}
            },
            503: not_ready,
        },
    )
    def ready() -> JSONResponse:
        try:
            ok, facts = check_ready()
        except Exception as exc:
            metrics.api_errors.labels(exception=type(exc).__name__).inc()
            _log.error("ready_check_failed", error=repr(exc), traceback=plain_traceback(exc))
            return error_response(503, "not_ready", {"exception": type(exc).__name__})
        if not ok:
            return error_response(503, "not_ready", json_safe(facts))
        return JSONResponse({"status": "ready", "detail": json_safe(facts)})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        description="k2_api_* counters and histograms in Prometheus text format.",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueryRejected)
    async def rejected(_: Request, exc: QueryRejected) -> JSONResponse:
        return error_response(400, exc.reason, exc.detail)

    @app.exception_handler(QueryTimeout)
    async def timed_out(_: Request, exc: QueryTimeout) -> JSONResponse:
        return error_response(408, "query_timeout", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", jsonable_encoder(detail))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            reason = HTTPStatus(exc.status_code).name.lower()
        except ValueError:
            reason = "http_error"
        return error_response(exc.status_code, reason, exc.detail, headers=exc.headers)
