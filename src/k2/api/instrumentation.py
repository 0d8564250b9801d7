"""Every request counted and timed by route template; every unexpected exception answered.

``InstrumentationMiddleware`` is the outermost layer the app adds, so it sees every answer,
including those of the guard (401/429) and the body cap (413). It resolves the route template
itself, before the request runs, because those layers answer before routing happens.

Every answer carries ``X-Request-ID`` (the caller's, if it sent a well-formed one, else a new one),
and every log line written while the request runs has it as ``request_id`` (structlog context),
so one id ties a client's report to the API's log.

An exception nothing else handled is logged with its traceback (no frame locals), counted in
``k2_api_errors_total{exception}`` and answered ``500 {"error": "internal"}`` with no traceback
in the body; it is not re-raised, so the server goes on answering.
"""

from __future__ import annotations

import re
import time
import traceback
import uuid
from collections.abc import Sequence

import structlog
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2.api.error_responses import error_response
from k2.logs import get_logger
from k2.observability import Metrics

__all__ = [
    "REQUEST_ID_HEADER",
    "InstrumentationMiddleware",
    "plain_traceback",
    "request_id",
    "route_template",
]

_UNMATCHED = "<unmatched>"
_log = get_logger("api")
REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is short and plain (it goes into logs), else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _WELL_FORMED_ID.match(text):
                return text
    return uuid.uuid4().hex[:16]


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template a request maps to (``/v1/trades``), or ``<unmatched>`` for a 404."""
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match == Match.FULL and path is not None:
            return str(path)
        if match == Match.PARTIAL and partial is None and path is not None:
            partial = str(path)  # right path, wrong method: 405
    return partial or _UNMATCHED


def plain_traceback(exc: BaseException) -> str:
    """The traceback as text, without frame locals.

    Never ``log.exception`` here: structlog's console renderer would print every frame's locals,
    which include the ASGI scope (the caller's X-API-Key) and take seconds to render.
    """
    return "".join(traceback.format_exception(exc))


class InstrumentationMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], metrics: Metrics) -> None:
        """``routes``: every route of the app, flat (not an included router: match each route)."""
        self.app = app
        self.routes = list(routes)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.routes, scope)
        started = time.perf_counter()
        status = 500
        response_started = False
        rid = request_id(scope)

        async def send_and_note(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(request_id=rid):
                await self.app(scope, receive, send_and_note)
        except Exception as exc:
            status = 500
            self.metrics.api_errors.labels(exception=type(exc).__name__).inc()
            _log.error(
                "unhandled_exception",
                request_id=rid,
                route=route,
                method=scope.get("method"),
                error=repr(exc),
                traceback=plain_traceback(exc),
            )
            if not response_started:
                response = error_response(500, "internal", "unexpected server error; it has been logged")
                await response(scope, receive, send_and_note)
        finally:
            self.metrics.api_requests.labels(route=route, status=str(status)).inc()
            self.metrics.api_request_duration.labels(route=route).observe(time.perf_counter() - started)
