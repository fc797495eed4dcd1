"""The operator's users: a paged list, create (a tenant's people or platform staff; the password is generated
and shown once), disable, unlock after the sign-in lock, reset the password (shown once), and end every
session. The same services as `vidfactory admin user`, audited under the operator's name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from vidfactory.accounts import (AccountError, PasswordHasher, UserExists, create_user, disable_user, end_sessions, find_user,
                                 reset_password, roles, unlock_user, users_page)
from vidfactory.accounts.passwords import generated_password
from vidfactory.api.errors import id_pattern
from vidfactory.tenancy import TenancyError, find_tenant
from vidfactory.web.console import Console, ListCursor
from vidfactory.web.forms import opened, posted

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
users_per_page = 50
done_words = {action: f"users.done_{action}" for action in ("disable", "unlock", "sign_out")}


def _shown(user: Any) -> dict[str, Any]:
    state = "disabled" if user.disabled_at is not None else "locked" if user.locked_at is not None else "active"
    return {"id": user.id, "email": user.email, "role": user.role, "tenant_id": user.tenant_id, "state": state}


def _list(page: Console, after: str | None = None, status_code: int = 200, errors: dict[str, str] | None = None,
          values: dict[str, str] | None = None, message: str = "", password: str = "") -> Response:
    with page.ctx.sessions() as session:
        rows, more = users_page(session, after, users_per_page)
        shown = [_shown(user) for user in rows]
    return page.render("users.html", status_code=status_code, users=shown, roles=roles, errors=errors or {},
                       values=values or {}, message=message, password=password,
                       next_after=shown[-1]["id"] if more else None)


@router.get("/users")
def users(request: Request, after: ListCursor,
          done: Annotated[str, Query(max_length=16)] = "") -> Response:
    page = opened(request, "users")
    if isinstance(page, Response):
        return page
    return _list(page, after, message=page.t(done_words[done]) if done in done_words else "")


@router.post("/users")
async def user_create(request: Request) -> Response:
    outcome = await posted(request, "users")
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    values = {f"create.{field}": form.get(field, "") for field in ("email", "role", "tenant")}
    password, hasher, actor = generated_password(), PasswordHasher.from_settings(page.ctx.settings), page.principal.actor

    def create() -> str:
        with page.ctx.sessions.begin() as session:
            tenant = form.get("tenant", "").strip()
            tenant_id = find_tenant(session, tenant).id if tenant else None
            return create_user(session, hasher, form.get("email", ""), form.get("role", ""), password, tenant_id,
                               actor=actor).email

    try:
        email = await run_in_threadpool(create)
    except TenancyError:
        return _list(page, status_code=400, errors={"create.tenant": page.t("users.unknown_tenant")}, values=values)
    except UserExists:
        return _list(page, status_code=409, errors={"create.email": page.t("users.exists")}, values=values)
    except AccountError as exc:
        field = exc.param if exc.param in ("email", "role", "tenant") else "email"
        return _list(page, status_code=400, errors={f"create.{field}": page.t(f"users.bad_{field}")}, values=values)
    return _list(page, message=page.t("users.created", email=email), password=password)


async def _change(request: Request, user_id: str, change) -> tuple[Console, Any] | Response:
    """A row's button: the user's change by `change(session, user_id, actor)`, or the answer to send."""
    outcome = await posted(request, "users")
    if isinstance(outcome, Response):
        return outcome
    page, _ = outcome
    if id_pattern.fullmatch(user_id) is None:
        return page.error(404, "error.not_found")
    try:
        with page.ctx.sessions.begin() as session:
            if find_user(session, user_id).id != user_id:
                return page.error(404, "error.not_found")
            return page, change(session, user_id, page.principal.actor)
    except AccountError:
        return page.error(404, "error.not_found")


@router.post("/users/{user_id}/disable")
async def user_disable(request: Request, user_id: str) -> Response:
    done = await _change(request, user_id, lambda session, uid, actor: disable_user(session, uid, actor=actor))
    return done if isinstance(done, Response) else RedirectResponse("/users?done=disable", status_code=303)


@router.post("/users/{user_id}/unlock")
async def user_unlock(request: Request, user_id: str) -> Response:
    done = await _change(request, user_id, lambda session, uid, actor: unlock_user(session, uid, actor=actor))
    return done if isinstance(done, Response) else RedirectResponse("/users?done=unlock", status_code=303)


@router.post("/users/{user_id}/sign-out")
async def user_sign_out(request: Request, user_id: str) -> Response:
    done = await _change(request, user_id, lambda session, uid, actor: end_sessions(session, uid, actor=actor))
    return done if isinstance(done, Response) else RedirectResponse("/users?done=sign_out", status_code=303)


@router.post("/users/{user_id}/reset-password")
async def user_reset_password(request: Request, user_id: str) -> Response:
    """The new password is on this answer only (never in a redirect's address, never stored in clear)."""
    outcome = await posted(request, "users")
    if isinstance(outcome, Response):
        return outcome
    page, _ = outcome
    hasher = PasswordHasher.from_settings(page.ctx.settings)

    def reset() -> tuple[str, str] | None:
        with page.ctx.sessions.begin() as session:
            try:
                if find_user(session, user_id).id != user_id:
                    return None
            except AccountError:
                return None
            user, password = reset_password(session, hasher, user_id, actor=page.principal.actor)
            return user.email, password

    if id_pattern.fullmatch(user_id) is None or (reset_done := await run_in_threadpool(reset)) is None:
        return page.error(404, "error.not_found")
    email, password = reset_done
    return _list(page, message=page.t("users.reset", email=email), password=password)
