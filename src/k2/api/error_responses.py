"""The one shape every API error takes: ``{"error": reason, "detail": ...}``.

``error`` is a short stable label a client can branch on (``unauthorized``, ``rate_limited``,
``too_long``, ``query_timeout``...); ``detail`` is for the human reading it. Errors are always
JSON, whatever ``format`` the request asked for, and never carry a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

__all__ = ["ErrorBody", "error_response"]


class ErrorBody(BaseModel):
    error: str = Field(description="Stable, machine-readable reason.", examples=["bad_parameter"])
    detail: Any = Field(default=None, description="Human explanation, or the list of invalid fields.")


def error_response(
    status_code: int, error: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code, headers=headers)
