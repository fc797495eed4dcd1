"""Requests per minute per API key, in memory (one process). A sliding one-minute window."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

__all__ = ["RateLimiter"]

window_s = 60.0


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str, per_minute: int, now: float | None = None) -> float:
        """Record a request; return 0 when allowed, else the seconds to wait (for Retry-After)."""
        assert per_minute >= 1
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - window_s:
                hits.popleft()
            if len(hits) >= per_minute:
                return max(1.0, math.ceil(hits[0] + window_s - now))
            hits.append(now)
            return 0.0
