"""Requests per minute, per API key and per tenant, over a sliding one-minute window.

`MemoryLimiter` counts inside one process (the embedded default). `RedisLimiter` keeps the windows in
Redis so every API replica counts against the same numbers: one Lua script checks every window and
records the request in all of them only when all allow it (atomic in Redis, whose clock it uses, so
replicas with skewed clocks still agree). When Redis cannot be reached, `failure_mode` decides: "open"
lets the request through, "closed" raises `LimiterUnavailable` (503).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import redis

__all__ = ["Limiter", "LimiterUnavailable", "MemoryLimiter", "RedisLimiter", "Window", "make_limiter"]

log = logging.getLogger(__name__)
window_s = 60.0


class LimiterUnavailable(Exception):
    """The shared limiter cannot be reached and the operator chose to fail closed."""


@dataclass(frozen=True)
class Window:
    """One counter: `key` names it (and the scope reported back), `per_minute` is its limit."""

    key: str
    per_minute: int

    def __post_init__(self) -> None:
        assert self.per_minute >= 1, f"limit of {self.key} must be at least 1 per minute"


@dataclass(frozen=True)
class Verdict:
    wait_s: float  # 0 when allowed; otherwise seconds until the fullest window has room (Retry-After)
    window: Window | None  # the window that refused


class Limiter(Protocol):
    def check(self, windows: list[Window]) -> Verdict: ...


class MemoryLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def check(self, windows: list[Window], now: float | None = None) -> Verdict:
        """Record the request in every window when all allow it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            refusal = Verdict(0.0, None)
            for window in windows:
                hits = self._hits.setdefault(window.key, deque())
                while hits and hits[0] <= now - window_s:
                    hits.popleft()
                if len(hits) >= window.per_minute:
                    wait_s = hits[0] + window_s - now
                    if wait_s > refusal.wait_s:
                        refusal = Verdict(wait_s, window)
            if refusal.window is not None:
                return refusal
            for window in windows:
                self._hits[window.key].append(now)
            return refusal


# KEYS: the windows; ARGV[1]: window in µs, ARGV[2]: a nonce (members must be unique), ARGV[3..]: limits.
# Returns {0, 0} when allowed, else {µs to wait, index of the refusing window (1-based)}.
sliding_window_lua = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local wait, refused = 0, 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait or refused == 0 then wait, refused = w, i end
  end
end
if refused > 0 then return {math.max(wait, 1), refused} end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, now .. ':' .. ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
end
return {0, 0}
"""


class RedisLimiter:
    def __init__(self, client: redis.Redis, *, prefix: str, failure_mode: str) -> None:
        assert failure_mode in ("open", "closed")
        self.client = client
        self.prefix = prefix
        self.failure_mode = failure_mode
        self._script = client.register_script(sliding_window_lua)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, failure_mode: str, timeout_s: float) -> RedisLimiter:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, prefix=prefix, failure_mode=failure_mode)

    def check(self, windows: list[Window]) -> Verdict:
        keys = [f"{self.prefix}rl:{w.key}" for w in windows]
        args = [int(window_s * 1_000_000), secrets.token_hex(8), *[w.per_minute for w in windows]]
        try:
            wait_us, refused = self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            if self.failure_mode == "closed":
                raise LimiterUnavailable(f"rate limiter unavailable: {exc}") from exc
            log.warning("rate limiter unavailable, letting the request through (fail open): %s", exc)
            return Verdict(0.0, None)
        if refused == 0:
            return Verdict(0.0, None)
        return Verdict(wait_us / 1_000_000, windows[refused - 1])


def make_limiter(redis_url: str, *, prefix: str, failure_mode: str, timeout_s: float) -> Limiter:
    if not redis_url:
        return MemoryLimiter()
    return RedisLimiter.from_url(redis_url, prefix=prefix, failure_mode=failure_mode, timeout_s=timeout_s)


def retry_after_s(wait_s: float) -> int:
    """Whole seconds, rounded up, at least 1 (a Retry-After of 0 invites an immediate retry)."""
    return max(1, math.ceil(wait_s))
