"""Shared dependencies as typed aliases."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from vidfactory.accounts import session_cookie, signed_in
from vidfactory.api.context import AppContext
from vidfactory.api.errors import ApiError
from vidfactory.api.ratelimit import LimiterUnavailable, Window, client_address, enforce, retry_after_s
from vidfactory.db.types import utcnow
from vidfactory.jobs.verification import Scope
from vidfactory.observability.requests import set_request_tenant
from vidfactory.tenancy import Caller, authenticate, key_use_due, note_key_used

__all__ = ["AdminDep", "CallerDep", "ContextDep", "IdempotencyKeyHeader", "ScopeDep", "SessionDep",
           "StreamTenantDep"]

idempotency_key_chars_max = 255


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing_api_key", "send your API key as 'Authorization: Bearer <key>'")
    return token.strip()


def _failed_auth_window(request: Request, ctx: AppContext) -> Window:
    address = client_address(request.client.host if request.client else None,
                             request.headers.get("x-forwarded-for"), ctx.trusted_proxies)
    return Window(f"failed-auth:{address}", ctx.settings.failed_auth_per_minute)


def _check_failed_auth(request: Request, ctx: AppContext, *, record: bool) -> None:
    """429 while the client's address has used up its failed attempts (recording one more when `record`)."""
    if not ctx.settings.rate_limit_enabled:
        return
    try:
        verdict = ctx.limiter.check([_failed_auth_window(request, ctx)], record=record)
    except LimiterUnavailable as exc:
        raise ApiError(503, "rate_limiter_unavailable", "the rate limiter is unavailable; retry shortly",
                       headers={"Retry-After": "1"}) from exc
    if verdict.window is not None:
        raise ApiError(429, "too_many_failed_attempts", f"too many failed API key attempts from your address; "
                       f"at most {ctx.settings.failed_auth_per_minute} a minute",
                       headers={"Retry-After": str(retry_after_s(verdict.wait_s))})


def get_caller(request: Request, ctx: ContextDep) -> Caller:
    token = _bearer(request)
    _check_failed_auth(request, ctx, record=False)
    with ctx.sessions() as session:
        caller = authenticate(session, token)
    if caller is None:
        _check_failed_auth(request, ctx, record=True)
        raise ApiError(401, "invalid_api_key", "the API key is not valid or was revoked")
    now = utcnow()
    if key_use_due(caller.key_last_used_at, now):
        with ctx.sessions.begin() as session:
            note_key_used(session, caller.api_key_id, now)
    set_request_tenant(request.state, caller.tenant_id)
    if ctx.settings.rate_limit_enabled:
        # What the limiter knows (limit, remaining, reset) stays on the request for the response headers.
        request.state.rate_limit = enforce(ctx.limiter, caller, request.method)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(request: Request, ctx: ContextDep) -> None:
    """401 for anything but the admin token; 403 for a valid tenant API key (known, but not the operator)."""
    token = _bearer(request)
    _check_failed_auth(request, ctx, record=False)
    if hmac.compare_digest(token.encode(), ctx.admin_token.encode()):
        return
    with ctx.sessions() as session:
        tenant_key = authenticate(session, token) is not None
    if tenant_key:
        raise ApiError(403, "admin_only", "admin routes need the operator's admin token, not an API key")
    _check_failed_auth(request, ctx, record=True)
    raise ApiError(401, "invalid_admin_token", "admin routes need the operator's admin token")


AdminDep = Annotated[None, Depends(require_admin)]


def get_scope(request: Request, ctx: ContextDep) -> Scope:
    """Routes open to tenants and admins alike: the admin token sees every tenant, an API key its own."""
    if hmac.compare_digest(_bearer(request).encode(), ctx.admin_token.encode()):
        return Scope(tenant_id=None)
    return Scope(tenant_id=get_caller(request, ctx).tenant_id)


ScopeDep = Annotated[Scope, Depends(get_scope)]


def get_stream_tenant(request: Request, ctx: ContextDep) -> str:
    """The tenant of an event stream: an API key, or a console session's cookie (a browser's EventSource
    cannot send headers). Only streams take the cookie: no API route that changes anything does, so no
    cross-site form can act through it."""
    if "authorization" in request.headers:
        return get_caller(request, ctx).tenant_id
    token = request.cookies.get(session_cookie)
    if token:
        with ctx.sessions() as session:
            principal = signed_in(session, token)
        if principal is not None and principal.tenant_id is not None:
            set_request_tenant(request.state, principal.tenant_id)
            return principal.tenant_id
    raise ApiError(401, "missing_api_key", "send your API key as 'Authorization: Bearer <key>', or sign in to "
                   "the console as one of the tenant's people")


StreamTenantDep = Annotated[str, Depends(get_stream_tenant)]


# Visible ASCII and spaces, as an HTTP field value should be; it is stored, and PostgreSQL refuses NUL.
IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=idempotency_key_chars_max, pattern=r"^[\x20-\x7e]+$")]
