"""Requests per minute, per API key and per tenant, over a sliding one-minute window, with separate
budgets for reading (GET, HEAD, OPTIONS: polling a video, listing) and writing (everything else:
creating videos), so a client polling its jobs never spends the budget it needs to submit them.

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

from vidfactory.api.errors import ApiError
from vidfactory.tenancy import Caller

__all__ = ["Limiter", "LimiterUnavailable", "MemoryLimiter", "Quota", "RedisLimiter", "Verdict", "Window", "budget",
           "caller_windows", "enforce", "make_limiter", "read_methods", "retry_after_s"]

log = logging.getLogger(__name__)
window_s = 60.0
read_methods = frozenset({"GET", "HEAD", "OPTIONS"})


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
class Quota:
    """What the limiter knows of the tightest window after a request (the `x-ratelimit-*` headers):
    `limit` per minute, `remaining` in the window now, `reset_s` until the window is empty again."""

    limit: int
    remaining: int
    reset_s: float

    def __post_init__(self) -> None:
        assert 0 <= self.remaining <= self.limit and self.reset_s >= 0, f"inconsistent quota {self}"


@dataclass(frozen=True)
class Verdict:
    wait_s: float  # 0 when allowed; otherwise seconds until the fullest window has room (Retry-After)
    window: Window | None  # the window that refused
    quota: Quota | None = None  # None when the limiter could not tell (Redis down, failing open)


def _tightest(windows: list[Window], counts: list[int], reset_s: list[float]) -> Quota:
    """The window with the fewest requests left, as a Quota."""
    remaining = [max(0, w.per_minute - count) for w, count in zip(windows, counts, strict=True)]
    index = remaining.index(min(remaining))
    return Quota(windows[index].per_minute, remaining[index], max(0.0, reset_s[index]))


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
            if refusal.window is None:
                for window in windows:
                    self._hits[window.key].append(now)
            all_hits = [self._hits[w.key] for w in windows]
            quota = _tightest(windows, [len(h) for h in all_hits],
                              [h[-1] + window_s - now if h else 0.0 for h in all_hits])
            return Verdict(refusal.wait_s, refusal.window, quota)


# KEYS: the windows; ARGV[1]: window in µs, ARGV[2]: a nonce (members must be unique), ARGV[3..]: limits.
# Returns {µs to wait (0 when allowed), index of the refusing window (1-based, 0 when allowed), then per
# window its count and µs until it is empty again}.
sliding_window_lua = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local wait, refused = 0, 0
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  counts[i] = redis.call('ZCARD', key)
  if counts[i] >= tonumber(ARGV[2 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait or refused == 0 then wait, refused = w, i end
  end
end
if refused > 0 then wait = math.max(wait, 1) else
  for i, key in ipairs(KEYS) do
    redis.call('ZADD', key, now, now .. ':' .. ARGV[2])
    redis.call('PEXPIRE', key, math.ceil(window / 1000))
    counts[i] = counts[i] + 1
  end
end
local result = {wait, refused}
for i, key in ipairs(KEYS) do
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  result[#result + 1] = counts[i]
  result[#result + 1] = newest[2] and (tonumber(newest[2]) + window - now) or 0
end
return result
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
            wait_us, refused, *per_window = self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            if self.failure_mode == "closed":
                raise LimiterUnavailable(f"rate limiter unavailable: {exc}") from exc
            log.warning("rate limiter unavailable, letting the request through (fail open): %s", exc)
            return Verdict(0.0, None)
        quota = _tightest(windows, per_window[0::2], [us / 1_000_000 for us in per_window[1::2]])
        if refused == 0:
            return Verdict(0.0, None, quota)
        return Verdict(wait_us / 1_000_000, windows[refused - 1], quota)


def make_limiter(redis_url: str, *, prefix: str, failure_mode: str, timeout_s: float) -> Limiter:
    if not redis_url:
        return MemoryLimiter()
    return RedisLimiter.from_url(redis_url, prefix=prefix, failure_mode=failure_mode, timeout_s=timeout_s)


def retry_after_s(wait_s: float) -> int:
    """Whole seconds, rounded up, at least 1 (a Retry-After of 0 invites an immediate retry)."""
    return max(1, math.ceil(wait_s))


def budget(method: str) -> str:
    """"read" for GET, HEAD and OPTIONS (polling, listing), "write" for everything else."""
    return "read" if method.upper() in read_methods else "write"


def caller_windows(caller: Caller, kind: str) -> list[Window]:
    """The caller's key and tenant windows for one budget (its plan's limits); the tenant id in braces
    keeps a tenant's windows in one Redis Cluster slot, so one script call can check them all."""
    assert kind in ("read", "write"), f"unknown budget {kind!r}"
    if kind == "read":
        per_key, per_tenant = caller.read_requests_per_minute, caller.tenant_read_requests_per_minute
    else:
        per_key, per_tenant = caller.requests_per_minute, caller.tenant_requests_per_minute
    return [Window(f"{{{caller.tenant_id}}}:{kind}:key:{caller.api_key_id}", per_key),
            Window(f"{{{caller.tenant_id}}}:{kind}:tenant", per_tenant)]


def enforce(limiter: Limiter, caller: Caller, method: str) -> Quota | None:
    """Count one request of `caller` against the budget its method spends. Returns what the limiter knows
    (None when it cannot tell); raises ApiError 429 with Retry-After when a window is full, 503 when the
    shared limiter is down and the operator chose to fail closed."""
    kind = budget(method)
    windows = caller_windows(caller, kind)
    try:
        verdict = limiter.check(windows)
    except LimiterUnavailable as exc:
        raise ApiError(503, "rate_limiter_unavailable", "the rate limiter is unavailable; retry shortly",
                       headers={"Retry-After": "1"}) from exc
    if verdict.window is None:
        return verdict.quota
    scope = "key" if verdict.window is windows[0] else "tenant"
    raise ApiError(429, "rate_limit_exceeded",
                   f"plan {caller.plan} allows {verdict.window.per_minute} {kind} requests per minute per {scope}",
                   headers={"Retry-After": str(retry_after_s(verdict.wait_s))})
