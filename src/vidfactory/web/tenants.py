"""The operator's tenants: a paged list with the create form, and one tenant's page to change its plan,
credit it, grant it a voucher, and suspend or resume it. The same services and schemas as
`/v1/admin/tenants`, so the same checks and the same audit entries (the actor is the operator)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from vidfactory.api.errors import id_pattern
from vidfactory.api.schemas import CreditCreate, TenantCreate, TenantPlanChange, TenantSuspend, VoucherGrant
from vidfactory.billing import ledger
from vidfactory.db.types import utcnow
from vidfactory.idempotency import IdempotencyConflict, IdempotencyInProgress, fingerprint, run_once
from vidfactory.notify.events import voucher_event
from vidfactory.tenancy import (TenancyError, TenantExists, change_plan, create_tenant, find_tenant, plans_with_tenants,
                                resume_tenant, suspend_tenant, tenants_page)
from vidfactory.web.console import Console, ListCursor
from vidfactory.web.forms import opened, posted
from vidfactory.web.operators import field_errors, number

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
tenants_per_page = 25
# What a tenant's page says after each action (the redirect's `done`), by the action's name.
done_words = {action: f"tenants.done_{action}" for action in ("created", "plan", "credit", "voucher", "suspend",
                                                               "resume")}
# The forms that move tokens carry a submission id, rendered with the page: the same form posted twice (a
# double click, a browser resending it) applies once, through the admin API's idempotency records.
once_scopes = {"credit": "admin-credit", "voucher": "admin-voucher"}
submission_pattern = re.compile(r"^[0-9a-f]{32}$")


class TenantResume(BaseModel):
    """Resuming takes nothing but the CSRF token."""

    model_config = ConfigDict(extra="forbid")


def _plans(page: Console) -> list[str]:
    with page.ctx.sessions() as session:
        return [plan.id for plan, _ in plans_with_tenants(session)]


def _list(page: Console, after: str | None, status_code: int = 200, errors: dict[str, str] | None = None,
          values: dict[str, str] | None = None) -> Response:
    with page.ctx.sessions() as session:
        rows, more = tenants_page(session, after, tenants_per_page)
        shown = [{"id": t.id, "name": t.name, "plan": t.plan_id, "suspended": t.suspended_at is not None,
                  "available": ledger.balance(session, t.id).available} for t in rows]
    return page.render("tenants.html", status_code=status_code, tenants=shown, plans=_plans(page),
                       next_after=shown[-1]["id"] if more else None, errors=errors or {}, values=values or {})


def _tenant(page: Console, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's facts, or None when there is no tenant with this id."""
    if id_pattern.fullmatch(tenant_id) is None:
        return None
    with page.ctx.sessions() as session:
        try:
            tenant = find_tenant(session, tenant_id)
        except TenancyError:
            return None
        if tenant.id != tenant_id:  # found by a name that looks like an id
            return None
        return {"id": tenant.id, "name": tenant.name, "plan": tenant.plan_id, "suspended": tenant.suspended_at is not None,
                "suspended_reason": tenant.suspended_reason, "balance": ledger.balance(session, tenant.id),
                "vouchers": ledger.voucher_balance(session, tenant.id)}


def _show(page: Console, tenant: dict[str, Any], status_code: int = 200, errors: dict[str, str] | None = None,
          values: dict[str, str] | None = None, done: str = "") -> Response:
    return page.render("tenant.html", status_code=status_code, tenant=tenant, plans=_plans(page), errors=errors or {},
                       values=values or {}, message=page.t(done_words[done]) if done in done_words else "",
                       submission=uuid.uuid4().hex)


def _once(form: dict[str, str], action: str, tenant_id: str, body: BaseModel) -> tuple[str, str] | None:
    """(idempotency key, request fingerprint) of a token-moving form; None for the others, or a form
    rendered without a submission id."""
    submission = form.get("submission", "")
    if action not in once_scopes or not submission_pattern.match(submission):
        return None
    return f"console:{submission}", fingerprint(f"/tenants/{tenant_id}/{action}", body.model_dump())


def _prefixed(form: str, errors: dict[str, str]) -> dict[str, str]:
    return {f"{form}.{field}": message for field, message in errors.items()}


@router.get("/tenants")
def tenants(request: Request, after: ListCursor) -> Response:
    page = opened(request, "tenants")
    return page if isinstance(page, Response) else _list(page, after)


@router.post("/tenants")
async def tenant_create(request: Request) -> Response:
    outcome = await posted(request, "tenants")
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    values = {"name": form.get("name", ""), "plan": form.get("plan", "")}
    try:
        body = TenantCreate.model_validate(values)
        with page.ctx.sessions.begin() as session:
            if body.plan not in {plan.id for plan, _ in plans_with_tenants(session, body.plan)}:
                return _list(page, None, 400, {"create.plan": page.t("tenants.unknown_plan")}, values)
            tenant = create_tenant(session, body.name, body.plan, actor=page.principal.actor)
    except ValidationError as exc:
        return _list(page, None, 400, _prefixed("create", field_errors(page, exc)), values)
    except TenantExists:
        return _list(page, None, 409, {"create.name": page.t("tenants.exists")}, values)
    except TenancyError:
        return _list(page, None, 400, {"create.name": page.t("operators.error_invalid")}, values)
    return RedirectResponse(f"/tenants/{tenant.id}?done=created", status_code=303)


@router.get("/tenants/{tenant_id}")
def tenant_page(request: Request, tenant_id: str, done: Annotated[str, Query(max_length=16)] = "") -> Response:
    page = opened(request, "tenants")
    if isinstance(page, Response):
        return page
    tenant = _tenant(page, tenant_id)
    return page.error(404, "error.not_found") if tenant is None else _show(page, tenant, done=done)


async def _action(request: Request, tenant_id: str, action: str, schema: type, fields: tuple[str, ...],
                  apply) -> Response:
    """One form on a tenant's page: checked by the admin API's schema, applied in one transaction by
    `apply(session, body, actor)`, then back to the tenant's page saying it is done."""
    outcome = await posted(request, "tenants")
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    tenant = _tenant(page, tenant_id)
    if tenant is None:
        return page.error(404, "error.not_found")
    values = {f"{action}.{field}": form.get(field, "") for field in fields}
    try:
        body = schema.model_validate({field: number(form.get(field, "")) if field in ("tokens", "expires_days")
                                      else form.get(field, "") for field in fields})

        def effect(session) -> tuple[int, dict[str, Any]]:
            apply(session, body, page.principal.actor)
            return 201, {}

        run_once(page.ctx.sessions, tenant_id, _once(form, action, tenant_id, body), effect,
                 scope=once_scopes.get(action, "tenant"), reservation_s=page.ctx.settings.idempotency_reservation_s)
    except ValidationError as exc:
        return _show(page, tenant, 400, _prefixed(action, field_errors(page, exc)), values)
    except (TenancyError, IdempotencyConflict, IdempotencyInProgress):
        return _show(page, tenant, 400, {f"{action}.{fields[0] if fields else 'form'}": page.t(f"tenants.{action}_refused")}, values)
    return RedirectResponse(f"/tenants/{tenant_id}?done={action}", status_code=303)


@router.post("/tenants/{tenant_id}/plan")
async def tenant_plan(request: Request, tenant_id: str) -> Response:
    return await _action(request, tenant_id, "plan", TenantPlanChange, ("plan",),
                         lambda session, body, actor: change_plan(session, tenant_id, body.plan, actor=actor))


@router.post("/tenants/{tenant_id}/credit")
async def tenant_credit(request: Request, tenant_id: str) -> Response:
    return await _action(request, tenant_id, "credit", CreditCreate, ("tokens", "memo"),
                         lambda session, body, actor: ledger.credit(session, tenant_id, body.tokens, body.memo,
                                                                    actor=actor))


def _grant(tenant_id: str):
    def grant(session, body: VoucherGrant, actor: str) -> None:
        expires_at = utcnow() + timedelta(days=body.expires_days)
        voucher_event(session, ledger.grant_voucher(session, tenant_id, body.tokens, expires_at, memo=body.reason,
                                                    actor=actor))
    return grant


@router.post("/tenants/{tenant_id}/voucher")
async def tenant_voucher(request: Request, tenant_id: str) -> Response:
    return await _action(request, tenant_id, "voucher", VoucherGrant, ("tokens", "expires_days", "reason"),
                         _grant(tenant_id))


@router.post("/tenants/{tenant_id}/suspend")
async def tenant_suspend(request: Request, tenant_id: str) -> Response:
    return await _action(request, tenant_id, "suspend", TenantSuspend, ("reason",),
                         lambda session, body, actor: suspend_tenant(session, tenant_id, body.reason, actor=actor))


@router.post("/tenants/{tenant_id}/resume")
async def tenant_resume(request: Request, tenant_id: str) -> Response:
    return await _action(request, tenant_id, "resume", TenantResume, (),
                         lambda session, body, actor: resume_tenant(session, tenant_id, actor=actor))
