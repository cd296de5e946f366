"""Token-bucket rate limiting per caller (user ID when authenticated, else client address).

Buckets live in memory: a restart forgets them, which is harmless for a limiter whose job
is to blunt password guessing and registration floods. Idle full buckets are dropped so the
table stays small.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`check(key)` returns 0 when the action may go ahead, else milliseconds to wait."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._last_sweep = clock()

    def check(self, key: str) -> int:
        now = self._clock()
        self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            refilled = bucket.tokens + (now - bucket.updated) * self.per_second
            bucket.tokens = min(self.burst, refilled)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, int((1.0 - bucket.tokens) / self.per_second * 1000))

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 60.0:
            return
        self._last_sweep = now
        refill = self.burst / self.per_second
        for key in [k for k, b in self._buckets.items() if now - b.updated > refill]:
            del self._buckets[key]
