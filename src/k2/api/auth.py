"""API keys: who may call ``/v1``.

A key is compared against *every* configured key with ``hmac.compare_digest`` and no early exit,
so neither the content nor the position of a key leaks through response time. An empty key list
means the API is open (local use); health and metrics endpoints never need a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["ApiKeys"]


class ApiKeys:
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str | None) -> str | None:
        """The caller's identity for rate limiting and logs, or None when the key is not valid.

        The identity is a digest prefix, so the key itself never reaches a log line or a label.
        """
        if presented is None:
            return None
        candidate = presented.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            return None
        return "key:" + hashlib.sha256(candidate).hexdigest()[:12]
