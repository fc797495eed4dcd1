"""Every response carries `x-request-id` (the caller's own `X-Request-Id` when it is a sane token, else a
new `req_…` id), and every request is logged as one JSON line: request id, tenant, method, route, status,
duration; and counted in the request metrics (observability/metrics.py) by route template. A pure ASGI
middleware, so streamed responses (SSE, downloads) pass through untouched.

An exception that escapes every handler still gets the error envelope and the request id, and is then
re-raised for the server to log; the line names the route, never the query string or a header.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidfactory.observability.metrics import http_request_duration, http_requests

__all__ = ["RequestIdMiddleware", "configure_request_log", "request_id_header", "request_log",
           "set_request_tenant"]

request_log = logging.getLogger("vidfactory.requests")
request_id_header = "x-request-id"
# What we echo back: ids from load balancers and SDKs (UUIDs, req_…, base64) fit; anything else (spaces,
# quotes, control characters, a megabyte) is replaced, never reflected into headers and logs.
incoming_id_pattern = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
unmatched_path_chars_max = 200
unmatched_route = "(unmatched)"  # the metrics' label for a path no route matched: scanners must not mint series
internal_error_body = json.dumps({"error": {"code": "internal_error", "type": "api_error", "param": None,
                                            "message": "the server failed to answer this request; quote the "
                                                       "x-request-id header when reporting it"}}).encode()


def set_request_tenant(state: Any, tenant_id: str) -> None:
    """Called once a request is authenticated: its log line names the tenant."""
    state.tenant_id = tenant_id


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            sent = value.decode("latin-1")
            if incoming_id_pattern.fullmatch(sent):
                return sent
            break
    return f"req_{secrets.token_hex(16)}"


def _template(scope: Scope) -> str | None:
    """The matched route's template (/v1/videos/{video_id}): ids stay out of the aggregate."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def _route(scope: Scope) -> str:
    """For the log: the template, or an unmatched path cut short."""
    return _template(scope) or scope.get("path", "")[:unmatched_path_chars_max]


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not response_started:
                await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(internal_error_body)).encode())]})
                await send({"type": "http.response.body", "body": internal_error_body})
            raise
        finally:
            duration_s = time.perf_counter() - started
            _log(scope, request_id, status, duration_s)
            _count(scope, status, duration_s)


def _log(scope: Scope, request_id: str, status: int, duration_s: float) -> None:
    state = scope.get("state", {})
    request_log.info(json.dumps({
        "request_id": request_id, "tenant": state.get("tenant_id"), "method": scope.get("method"),
        "route": _route(scope), "status": status, "duration_ms": round(duration_s * 1000, 2)},
        ensure_ascii=False, separators=(",", ":")))


def _count(scope: Scope, status: int, duration_s: float) -> None:
    route, method = _template(scope) or unmatched_route, scope.get("method", "")
    http_requests.labels(route=route, method=method, status=str(status)).inc()
    http_request_duration.labels(route=route, method=method).observe(duration_s)


def configure_request_log() -> None:
    """The request log as bare JSON lines (one object per line, nothing before it), for log shippers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False
