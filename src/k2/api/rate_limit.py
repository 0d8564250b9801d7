"""Per-caller token buckets: ``rate_limit_per_s`` sustained, ``rate_limit_burst`` at once.

``TokenBucket`` is pure (the time is an argument); ``RateLimiter`` keeps one bucket per caller (an
API key identity, or the client address when the API is open) and reads its injected clock.
Buckets that have refilled completely are forgotten, so memory follows the number of *recent*
callers, not every address that ever knocked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        # A clock that steps back (monotonic clocks don't, injected ones might) adds nothing.
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until a token is available."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, caller: str) -> float:
        """0.0 when ``caller`` may proceed, else the seconds to wait (for ``Retry-After``)."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self._max_callers:
                self._forget_idle(now)
            bucket = self._buckets[caller] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def _forget_idle(self, now: float) -> None:
        # A full bucket is indistinguishable from a new one: dropping it changes no decision.
        for caller in [c for c, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[caller]

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """``Retry-After`` is whole seconds; round up so a client that obeys it is let in."""
        return str(max(1, math.ceil(wait_s)))
