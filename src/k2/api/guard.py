"""Who may call ``/v1`` and how often: API key first, then the caller's token bucket.

Runs as middleware, ahead of routing and body parsing, so a caller without a valid key gets
nothing parsed and nothing run. Paths outside ``/v1`` (health, metrics, docs) are open: an
orchestrator's probe or a Prometheus scrape carries no key and must never be rate limited.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from k2.api.auth import ApiKeys
from k2.api.error_responses import error_response
from k2.api.rate_limit import RateLimiter

__all__ = ["API_KEY_HEADER", "GuardMiddleware"]

API_KEY_HEADER = "X-API-Key"
_HEADER = API_KEY_HEADER.lower().encode()


class GuardMiddleware:
    def __init__(self, app: ASGIApp, keys: ApiKeys, limiter: RateLimiter) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.keys.required:
            caller = self.keys.identify(_header(scope, _HEADER))
            if caller is None:
                response = error_response(
                    401,
                    "unauthorized",
                    f"a valid {API_KEY_HEADER} header is required",
                    headers={"WWW-Authenticate": API_KEY_HEADER},
                )
                await response(scope, receive, send)
                return
        else:
            client = scope.get("client")
            caller = "addr:" + (client[0] if client else "unknown")
        wait_s = self.limiter.check(caller)
        if wait_s > 0:
            response = error_response(
                429,
                "rate_limited",
                f"over {self.limiter.rate:g} requests/s (burst {self.limiter.burst}); "
                f"retry in {wait_s:.2f} s",
                headers={"Retry-After": RateLimiter.retry_after(wait_s)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _guarded(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
