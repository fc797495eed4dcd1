"""The console's pages, one handler per page (its template of the same name), under `/`."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from vidfactory.accounts import AccountError, BadCredentials, PasswordHasher, change_password, revoke_session
from vidfactory.accounts import session_cookie, sign_in
from vidfactory.accounts.users import password_chars_max, password_chars_min
from vidfactory.api.ratelimit import LimiterUnavailable, client_address, retry_after_s, signin_refused
from vidfactory.web import (admin_fleet, admin_plans, admin_users, batches, billing, create, developers,
                            prompt_templates, review, styles, tenants, videos)
from vidfactory.web.console import Console, here, login_csrf_cookie
from vidfactory.web.i18n import locale_cookie, locales

__all__ = ["mount", "router"]

router = APIRouter(include_in_schema=False)
form_chars_max = 1000  # any one field of a console form
swagger_version = "5.36.0"
locale_cookie_max_age_s = 365 * 24 * 3600


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(create.router)
    app.include_router(review.router)
    app.include_router(prompt_templates.router)
    app.include_router(batches.router)
    app.include_router(tenants.router)
    app.include_router(billing.router)
    app.include_router(developers.router)
    app.include_router(admin_users.router)
    app.include_router(admin_fleet.router)
    app.include_router(videos.router)
    app.include_router(styles.router)
    app.include_router(admin_plans.router)
    app.mount("/static", StaticFiles(directory=here / "static"), name="static")


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never `//host` or a scheme): no open redirect through the sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: str(value)[:form_chars_max] for key, value in form.items() if isinstance(value, str)}


@router.get("/")
def home(request: Request) -> Response:
    page = Console(request)
    if page.principal is None:
        return RedirectResponse("/sign-in", status_code=303)
    return RedirectResponse("/review" if page.principal.is_operator else "/videos", status_code=303)


@router.get("/sign-in")
def sign_in_page(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> Response:  # noqa: A002
    page = Console(request)
    if page.principal is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _sign_in_form(page, _safe_next(next))


def _sign_in_form(page: Console, next_path: str, status_code: int = 200, message: str = "", email: str = ""
                  ) -> HTMLResponse:
    token = page.request.cookies.get(login_csrf_cookie) or secrets.token_urlsafe(24)
    response = page.render("sign_in.html", status_code=status_code, csrf=token, next=next_path, message=message,
                           email=email)
    response.set_cookie(login_csrf_cookie, token, httponly=True, samesite="lax", secure=page.secure, path="/sign-in")
    return response


@router.post("/sign-in")
async def sign_in_submit(request: Request) -> Response:
    page = Console(request)
    form = await _form(request)
    next_path = _safe_next(form.get("next"))
    if not page.csrf_ok(form):
        return page.error(403, "error.csrf")
    email = form.get("email", "").strip()
    ctx, settings = page.ctx, page.ctx.settings
    address = client_address(request.client.host if request.client else None, request.headers.get("x-forwarded-for"),
                             ctx.trusted_proxies)
    limit = settings.signin_address_failures_per_minute

    def address_refusal(record: bool) -> HTMLResponse | None:
        if not settings.rate_limit_enabled:
            return None
        try:
            wait_s = signin_refused(ctx.limiter, address, limit, record=record)
        except LimiterUnavailable:
            return _sign_in_form(page, next_path, 503, page.t("sign_in.unavailable"), email)
        if wait_s is None:
            return None
        return _sign_in_form(page, next_path, 429, page.t("sign_in.address_limited", seconds=retry_after_s(wait_s)),
                             email)

    refused = address_refusal(record=False)
    if refused is not None:
        return refused

    def attempt():
        with ctx.sessions.begin() as session:
            return sign_in(session, PasswordHasher.from_settings(settings), email, form.get("password", ""),
                           ttl_s=settings.console_session_ttl_s, failures_max=settings.signin_failures_max)

    outcome = await run_in_threadpool(attempt)
    if outcome.error is not None:
        if isinstance(outcome.error, BadCredentials):
            address_refusal(record=True)  # counted; this attempt's answer stays the same
            return _sign_in_form(page, next_path, 401, page.t("sign_in.bad_credentials"), email)
        return _sign_in_form(page, next_path, 403, page.t("sign_in.locked"), email)
    response = RedirectResponse(next_path if next_path != "/" else "/", status_code=303)
    response.set_cookie(session_cookie, outcome.token, max_age=settings.console_session_ttl_s, httponly=True,
                        samesite="lax", secure=page.secure, path="/")
    response.delete_cookie(login_csrf_cookie, path="/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    page = Console(request)
    form = await _form(request)
    if page.principal is None:
        return RedirectResponse("/sign-in", status_code=303)
    if not page.csrf_ok(form):
        return page.error(403, "error.csrf")
    with page.ctx.sessions.begin() as session:
        revoke_session(session, page.principal.session_id, actor=page.principal.actor)
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(session_cookie, path="/")
    return response


@router.get("/lang/{locale}")
def switch_language(request: Request, locale: str, next: Annotated[str | None, Query(max_length=500)] = None,  # noqa: A002
                    ) -> Response:
    response = RedirectResponse(_safe_next(next), status_code=303)
    if locale in locales:
        response.set_cookie(locale_cookie, locale, max_age=locale_cookie_max_age_s, samesite="lax", path="/")
    return response


@router.get("/account")
def account(request: Request) -> Response:
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    return page.render("account.html", message="", error="")


@router.post("/account/password")
async def account_password(request: Request) -> Response:
    page = Console(request)
    form = await _form(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.csrf_ok(form):
        return page.error(403, "error.csrf")
    principal, settings = page.principal, page.ctx.settings

    def change() -> str:
        try:
            with page.ctx.sessions.begin() as session:
                change_password(session, PasswordHasher.from_settings(settings), principal.user_id,
                                form.get("current_password", ""), form.get("new_password", ""), principal.session_id)
        except BadCredentials:
            return "account.wrong_current"
        except AccountError:
            return "account.password_rule"
        return ""

    failure = await run_in_threadpool(change)
    if failure:
        error = page.t(failure, min=password_chars_min, max=password_chars_max) if failure.endswith("rule") \
            else page.t(failure)
        return page.render("account.html", status_code=400, message="", error=error)
    return page.render("account.html", message=page.t("account.changed"), error="")


@router.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    """Swagger UI from this package's own copy (no CDN), with the bearer "Authorize" button."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="vidfactory API",
                               swagger_js_url=f"/static/swagger-ui-{swagger_version}-bundle.js",
                               swagger_css_url=f"/static/swagger-ui-{swagger_version}.css",
                               swagger_favicon_url="/static/favicon.svg",
                               oauth2_redirect_url="/docs/oauth2-redirect",
                               swagger_ui_parameters={"persistAuthorization": True})


@router.get("/docs/oauth2-redirect")
def swagger_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()
