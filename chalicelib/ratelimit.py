"""Per-write-key rate limit of the ingest API: a token bucket per key, in the API process.

Locally (``streamfold up``) the one process serves every request, so the bucket is exact. On AWS each
Lambda container holds its own buckets, so the limit there is API Gateway's: a usage plan (or a WAF
rate-based rule) per key — see ``docs/RELIABILITY.md``; this bucket then only caps what one warm
container accepts.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go on and, if not, how many seconds until it may (``Retry-After``)."""

    allowed: bool
    retry_after: int = 0


class RateLimiter:
    """Token buckets keyed by an opaque string (the write key's hash, never the key itself).

    Args:
        rate: tokens added per second (sustained requests per second per key).
        burst: bucket size (requests a key that was quiet may send at once).
        max_keys: buckets kept (least recently used dropped first: a dropped key starts full again).
        clock: monotonic clock (injectable for tests).
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)
        self._lock = threading.Lock()

    def take(self, key: str) -> Verdict:
        """Spend one token of ``key``'s bucket, or say how long until one is there."""
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        if allowed:
            return Verdict(True)
        return Verdict(False, max(1, math.ceil((1.0 - tokens) / self.rate)))

    def describe(self) -> str:
        return f"{self.rate:g} requests/s per write key, bursts of {self.burst}"
