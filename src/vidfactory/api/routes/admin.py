"""/v1/admin: the operator's routes (tenants, keys, credits), behind the admin token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, ContextDep, IdempotencyKeyHeader, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import timestamp, transfer_object
from vidfactory.api.schemas import CreditCreate, KeyPublic, TenantCreate, TenantPlanChange, TenantPublic, TenantSuspend
from vidfactory.billing import ledger
from vidfactory.db.models import Plan, Tenant
from vidfactory.idempotency import fingerprint, run_once
from vidfactory.tenancy import (
    TenancyError,
    TenantExists,
    change_plan,
    create_key,
    create_tenant,
    list_tenants,
    resume_tenant,
    revoke_key,
    suspend_tenant,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])
admin_actor = "admin"


def tenant_public(tenant: Tenant) -> TenantPublic:
    return TenantPublic(id=tenant.id, name=tenant.name, plan=tenant.plan_id, created_at=timestamp(tenant.created_at),
                        suspended_at=None if tenant.suspended_at is None else timestamp(tenant.suspended_at),
                        suspended_reason=tenant.suspended_reason)


@router.post("/tenants", status_code=201)
def admin_create_tenant(body: TenantCreate, ctx: ContextDep, _admin: AdminDep) -> TenantPublic:
    try:
        with ctx.sessions.begin() as session:
            # Checked here too so that the error names the field at fault; create_tenant checks the name.
            if session.get(Plan, body.plan) is None:
                raise ApiError(400, "invalid_value", f"unknown plan {body.plan!r}", param="plan")
            return tenant_public(create_tenant(session, body.name, body.plan, actor=admin_actor))
    except TenantExists as exc:
        raise ApiError(409, "tenant_exists", str(exc), param="name") from exc
    except TenancyError as exc:
        raise ApiError(400, "invalid_value", str(exc), param="name") from exc


@router.get("/tenants")
def admin_list_tenants(session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    return {"object": "list", "data": [tenant_public(t) for t in list_tenants(session)]}


@router.post("/tenants/{tenant_id}/suspend")
def admin_suspend_tenant(tenant_id: str, body: TenantSuspend, ctx: ContextDep, _admin: AdminDep) -> TenantPublic:
    """Suspend a tenant: new submissions (videos, regenerations, batches) and new keys are refused with
    403 tenant_suspended; its queued and running jobs finish and settle; reads, downloads and cancels go
    on. Audited; suspending again changes nothing."""
    checked_id("tenant", tenant_id)
    with ctx.sessions.begin() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)
        return tenant_public(suspend_tenant(session, tenant_id, body.reason, actor=admin_actor))


@router.post("/tenants/{tenant_id}/plan")
def admin_change_plan(tenant_id: str, body: TenantPlanChange, ctx: ContextDep, _admin: AdminDep) -> TenantPublic:
    """Move the tenant to another plan (audited with the old and new plan). Its next request gets the new
    plan's limits; jobs already submitted keep what they copied."""
    checked_id("tenant", tenant_id)
    with ctx.sessions.begin() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)
        if session.get(Plan, body.plan) is None:
            raise ApiError(400, "invalid_value", f"unknown plan {body.plan!r}", param="plan")
        return tenant_public(change_plan(session, tenant_id, body.plan, actor=admin_actor))


@router.post("/tenants/{tenant_id}/resume")
def admin_resume_tenant(tenant_id: str, ctx: ContextDep, _admin: AdminDep) -> TenantPublic:
    """Lift a suspension (audited; a no-op for an active tenant)."""
    checked_id("tenant", tenant_id)
    with ctx.sessions.begin() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)
        return tenant_public(resume_tenant(session, tenant_id, actor=admin_actor))


@router.post("/tenants/{tenant_id}/keys", status_code=201)
def admin_create_key(tenant_id: str, ctx: ContextDep, _admin: AdminDep) -> KeyPublic:
    checked_id("tenant", tenant_id)
    with ctx.sessions.begin() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)
        row, plaintext = create_key(session, tenant_id, actor=admin_actor)
        return KeyPublic(id=row.id, tenant_id=tenant_id, prefix=row.prefix, key=plaintext)


@router.post("/keys/{key_id}/revoke")
def admin_revoke_key(key_id: str, ctx: ContextDep, _admin: AdminDep) -> KeyPublic:
    """Revoke an API key at once (revoking a revoked key changes nothing)."""
    checked_id("api key", key_id)
    with ctx.sessions.begin() as session:
        row = revoke_key(session, key_id, actor=admin_actor)
        if row is None:
            raise not_found("api key", key_id)
        return KeyPublic(id=row.id, tenant_id=row.tenant_id, prefix=row.prefix, revoked=True)


@router.post("/tenants/{tenant_id}/credits", status_code=201)
def admin_credit(tenant_id: str, body: CreditCreate, ctx: ContextDep, _admin: AdminDep,
                 idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """A top-up. Send an Idempotency-Key so that a retried request never credits twice."""
    checked_id("tenant", tenant_id)
    with ctx.sessions() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)

    def credit(session: Session) -> tuple[int, dict[str, Any]]:
        result = transfer_object(ledger.credit(session, tenant_id, body.tokens, body.memo, actor=admin_actor))
        result["balance"] = vars(ledger.balance(session, tenant_id))
        return 201, result

    idempotency = None
    if idempotency_key is not None:
        idempotency = (idempotency_key, fingerprint(f"/v1/admin/tenants/{tenant_id}/credits", body.model_dump()))
    # The operator's key space: a tenant's own keys never meet it.
    outcome = run_once(ctx.sessions, tenant_id, idempotency, credit, scope="admin-credit",
                       reservation_s=ctx.settings.idempotency_reservation_s)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)
