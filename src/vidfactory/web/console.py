"""What every console page shares: who is signed in, the CSRF check of its forms, the language, the
navigation a role sees, and rendering a template with all of that."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from vidfactory.accounts import Principal, csrf_token, session_cookie, signed_in
from vidfactory.accounts.sessions import csrf_matches
from vidfactory.api.context import AppContext
from vidfactory.api.errors import id_pattern
from vidfactory.web.i18n import locale_cookie, pick_locale, translator

__all__ = ["Console", "ListCursor", "csrf_field", "login_csrf_cookie", "nav_for", "templates"]

here = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=here / "templates")
csrf_field = "csrf_token"
login_csrf_cookie = "vf_login_csrf"  # before there is a session, the sign-in form is double-submitted
# Scripts and styles come from this origin only (vendored); media may be blob/data (previews).
content_security_policy = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                           "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str


# Which pages each role reaches; the pages check the same table.
page_roles: dict[str, tuple[str, ...]] = {
    "create": ("owner", "member"),
    "review": ("operator", "reviewer"),
    "videos": ("owner", "member", "viewer"),
    "video_actions": ("owner", "member"),  # delete, regenerate, remix, feedback: a viewer only reads
    "templates": ("owner", "member", "viewer"),
    "templates_edit": ("owner", "member"),
    "batches": ("owner", "member", "viewer"),
    "batches_create": ("owner", "member"),
    "styles": ("owner", "member", "viewer"),
    "styles_edit": ("owner", "member"),  # upload, delete: a viewer only reads
    "trainings": ("owner", "member", "viewer"),
    "trainings_edit": ("owner", "member"),  # start, cancel
    "billing": ("owner",),
    "developers": ("owner",),
    "account": ("owner", "member", "viewer", "operator", "reviewer"),
    "tenants": ("operator",),
    "plans": ("operator",),
    "price_books": ("operator",),
    "workers": ("operator",),
    "alerts": ("operator",),
    "users": ("operator",),
}
nav_pages = (("create", "/create", "nav.create"), ("videos", "/videos", "nav.videos"),
             ("templates", "/templates", "nav.templates"), ("batches", "/batches", "nav.batches"),
             ("styles", "/styles", "nav.styles"), ("trainings", "/trainings", "nav.trainings"),
             ("billing", "/billing", "nav.billing"),
             ("developers", "/developers", "nav.developers"), ("review", "/review", "nav.review"),
             ("tenants", "/tenants", "nav.tenants"), ("plans", "/plans", "nav.plans"),
             ("price_books", "/price-books", "nav.price_books"), ("workers", "/workers", "nav.workers"),
             ("alerts", "/alerts", "nav.alerts"), ("users", "/users", "nav.users"), ("account", "/account", "nav.account"))


def nav_for(role: str) -> list[NavItem]:
    return [NavItem(path, key) for page, path, key in nav_pages if role in page_roles[page]]


class Console:
    """One request's view of the console."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.ctx: AppContext = request.app.state.ctx
        self.locale = pick_locale(request.cookies.get(locale_cookie), request.headers.get("accept-language"))
        self.t = translator(self.locale)
        self.token = request.cookies.get(session_cookie)
        self.principal: Principal | None = None
        if self.token:
            with self.ctx.sessions() as session:
                self.principal = signed_in(session, self.token)

    @property
    def secure(self) -> bool:
        return self.request.url.scheme == "https"

    def csrf(self) -> str:
        assert self.token is not None
        return csrf_token(self.token)

    def csrf_ok(self, form: dict[str, Any]) -> bool:
        """The form's token matches this session's (or, signing in, the double-submitted cookie)."""
        sent = str(form.get(csrf_field, ""))
        if self.principal is not None and self.token is not None:
            return csrf_matches(self.token, sent)
        cookie = self.request.cookies.get(login_csrf_cookie, "")
        return bool(cookie) and bool(sent) and secrets.compare_digest(cookie, sent)

    def allowed(self, page: str) -> bool:
        return self.principal is not None and self.principal.role in page_roles[page]

    def render(self, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        context = {"t": self.t, "locale": self.locale, "principal": self.principal,
                   "nav": nav_for(self.principal.role) if self.principal else [],
                   "csrf": self.csrf() if self.principal and self.token else values.pop("csrf", ""),
                   "path": self.request.url.path, **values}
        response = templates.TemplateResponse(self.request, template, context, status_code=status_code)
        response.headers["Content-Security-Policy"] = content_security_policy
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def error(self, status_code: int, message_key: str) -> HTMLResponse:
        return self.render("error.html", status_code=status_code, message=self.t(message_key))

    def to_sign_in(self) -> RedirectResponse:
        return RedirectResponse(f"/sign-in?next={self.request.url.path}", status_code=303)


def _list_cursor(after: Annotated[str | None, Query(max_length=64)] = None) -> str | None:
    """A list page's `after`, when it is an id the page could have issued; else None, from the start, as
    for an id that names nothing (some characters, NUL, make PostgreSQL refuse the query itself)."""
    return after if after is not None and id_pattern.fullmatch(after) else None


ListCursor = Annotated[str | None, Depends(_list_cursor)]
