"""Requests per minute, per API key and per tenant, over a sliding one-minute window, with separate
budgets for reading (GET, HEAD, OPTIONS: polling a video, listing) and writing (everything else:
creating videos), so a client polling its jobs never spends the budget it needs to submit them; failed
API-key attempts per client address (`client_address`); failed console sign-ins per client address
(`signin_window`; the per-account lock lives with the account, in the database); requests in flight at once (`ConcurrencyCaps`);
pixels being decoded at once (`PixelBudget`).

`MemoryLimiter` counts inside one process (the embedded default). `RedisLimiter` keeps the windows in
Redis so every API replica counts against the same numbers: one Lua script checks every window and
records the request in all of them only when all allow it (atomic in Redis, whose clock it uses, so
replicas with skewed clocks still agree). When Redis cannot be reached, `failure_mode` decides: "open"
lets the request through, "closed" raises `LimiterUnavailable` (503).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidfactory.api.errors import ApiError
from vidfactory.tenancy import Caller

__all__ = ["CapReached", "ConcurrencyCaps", "Limiter", "LimiterUnavailable", "MemoryLimiter", "PixelBudget", "Quota",
           "QuotaHeaders", "RedisLimiter", "Verdict", "Window", "budget", "caller_windows", "client_address",
           "enforce", "make_limiter", "quota_headers", "read_methods", "retry_after_s", "signin_refused",
           "signin_window"]

log = logging.getLogger(__name__)
window_s = 60.0
read_methods = frozenset({"GET", "HEAD", "OPTIONS"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    """The window with the fewest requests left, as a Quota. The reset is clamped to the window: computed as
    (newest hit + window) - now in floating point, it can exceed the window by a rounding error."""
    remaining = [max(0, w.per_minute - count) for w, count in zip(windows, counts, strict=True)]
    index = remaining.index(min(remaining))
    return Quota(windows[index].per_minute, remaining[index], min(window_s, max(0.0, reset_s[index])))


class Limiter(Protocol):
    def check(self, windows: list[Window], *, record: bool = True) -> Verdict: ...


class MemoryLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def check(self, windows: list[Window], now: float | None = None, *, record: bool = True) -> Verdict:
        """Record the request in every window when all allow it (`record` False: only say whether they would)."""
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
            if refusal.window is None and record:
                for window in windows:
                    self._hits[window.key].append(now)
            all_hits = [self._hits[w.key] for w in windows]
            quota = _tightest(windows, [len(h) for h in all_hits],
                              [h[-1] + window_s - now if h else 0.0 for h in all_hits])
            return Verdict(refusal.wait_s, refusal.window, quota)


# KEYS: the windows; ARGV[1]: window in µs, ARGV[2]: a nonce (members must be unique), ARGV[3]: "1" to
# record an allowed request, "0" only to answer; ARGV[4..]: limits.
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
  if counts[i] >= tonumber(ARGV[3 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait or refused == 0 then wait, refused = w, i end
  end
end
if refused > 0 then wait = math.max(wait, 1) elseif ARGV[3] == '1' then
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

    def check(self, windows: list[Window], *, record: bool = True) -> Verdict:
        keys = [f"{self.prefix}rl:{w.key}" for w in windows]
        args = [int(window_s * 1_000_000), secrets.token_hex(8), "1" if record else "0",
                *[w.per_minute for w in windows]]
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
                   headers={"Retry-After": str(retry_after_s(verdict.wait_s)), **quota_headers(verdict.quota)})


def signin_window(address: str, failures_max: int) -> Window:
    """Failed console sign-ins from one client address in the last minute."""
    return Window(f"signin-failures:{address}", failures_max)


def signin_refused(limiter: Limiter, address: str, failures_max: int, *, record: bool) -> float | None:
    """Seconds until the address may try again once it has `failures_max` failures in the window, else None
    (`record`: count one more failure first). Raises LimiterUnavailable as `check` does."""
    window = signin_window(address, failures_max)
    verdict = limiter.check([window], record=record)
    if verdict.window is None and record:  # the failure just counted may have been the last one allowed
        verdict = limiter.check([window], record=False)
    return None if verdict.window is None else verdict.wait_s


def quota_headers(quota: Quota | None) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*-requests` headers for the budget the request spent; the reset as a duration
    (`12.5s`), as OpenAI writes it. None (the limiter could not tell): no headers rather than made-up ones."""
    if quota is None:
        return {}
    return {"x-ratelimit-limit-requests": str(quota.limit), "x-ratelimit-remaining-requests": str(quota.remaining),
            "x-ratelimit-reset-requests": f"{round(quota.reset_s, 3):g}s"}


class QuotaHeaders:
    """ASGI middleware: a response to a request that was counted (`request.state.rate_limit`, set by the
    caller dependency) carries its quota headers; a 429 carries them from its error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_quota(message: Message) -> None:
            quota = scope.get("state", {}).get("rate_limit")
            if message["type"] == "http.response.start" and quota is not None:
                added = [(name.encode(), value.encode()) for name, value in quota_headers(quota).items()]
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_quota)


class CapReached(Exception):
    """As many requests of this kind are in flight as the cap allows; retry when one finishes."""


class ConcurrencyCaps:
    """Requests in flight at once, per key (e.g. one tenant's quotes), in this process: each API replica
    bounds its own memory and CPU, which is what these caps protect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    @contextmanager
    def hold(self, key: str, limit: int) -> Iterator[None]:
        assert limit >= 1
        with self._lock:
            if self._in_flight[key] >= limit:
                raise CapReached(f"{limit} at once")
            self._in_flight[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[key] -= 1
                if not self._in_flight[key]:
                    del self._in_flight[key]


class PixelBudget:
    """Pixels being decoded at once in this process. A decode's peak memory is proportional to its pixel
    count, so the budget bounds the memory all concurrent image decodes take together, whatever the
    files' byte sizes; a request waits up to `wait_s` for room, then gets CapReached."""

    def __init__(self, pixels_max: int) -> None:
        assert pixels_max >= 1
        self.pixels_max = pixels_max
        self._used = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int, wait_s: float) -> Iterator[None]:
        assert 1 <= pixels <= self.pixels_max, f"{pixels} pixels can never fit a budget of {self.pixels_max}"
        with self._room:
            if not self._room.wait_for(lambda: self._used + pixels <= self.pixels_max, timeout=wait_s):
                raise CapReached(f"images of {self.pixels_max} pixels in all are being decoded")
            self._used += pixels
        try:
            yield
        finally:
            with self._room:
                self._used -= pixels
                self._room.notify_all()


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: list[Network]) -> str:
    """Who is calling, for per-address limits: the peer, unless the peer is a proxy listed in
    `trusted_proxies`; then the nearest address in X-Forwarded-For that is not one (each proxy appends
    the address it received from, so anything left of the first untrusted hop may be forged)."""
    if peer is None:
        return "unknown"
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    address = peer
    while _is_trusted(address, trusted_proxies) and hops:
        address = hops.pop()
    return address


def _is_trusted(address: str, trusted_proxies: list[Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:  # a forged or garbled hop is nobody's proxy
        return False
    return any(parsed in network for network in trusted_proxies)
