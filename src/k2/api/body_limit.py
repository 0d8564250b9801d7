"""Request bodies are capped at ``max_body_bytes``, before any of it is parsed.

A declared ``Content-Length`` over the cap is refused without reading a byte; a chunked upload
(no length) is read up to the cap and refused the moment it passes it. Bodies under the cap are
buffered and replayed to the app, which is cheap because the cap is small (64 KiB by default).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2.api.error_responses import error_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(f"Content-Length {declared} is over the {self.max_body_bytes}-byte limit")(
                scope, receive, send
            )
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break  # http.disconnect: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._refuse(f"body is over the {self.max_body_bytes}-byte limit")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _refuse(detail: str) -> ASGIApp:
        return error_response(413, "body_too_large", detail)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
