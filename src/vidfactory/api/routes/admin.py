"""/v1/admin: the operator's routes (tenants, keys, credits), behind the admin token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from vidfactory.api.deps import AdminDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, not_found
from vidfactory.api.render import timestamp, transfer_object
from vidfactory.api.schemas import CreditCreate, KeyPublic, TenantCreate, TenantPublic
from vidfactory.billing import ledger
from vidfactory.db.models import Tenant
from vidfactory.tenancy import TenancyError, create_key, create_tenant

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def tenant_public(tenant: Tenant) -> TenantPublic:
    return TenantPublic(id=tenant.id, name=tenant.name, plan=tenant.plan_id, created_at=timestamp(tenant.created_at))


@router.post("/tenants", status_code=201)
def admin_create_tenant(body: TenantCreate, ctx: ContextDep, _admin: AdminDep) -> TenantPublic:
    try:
        with ctx.sessions.begin() as session:
            return tenant_public(create_tenant(session, body.name, body.plan))
    except TenancyError as exc:
        raise ApiError(400, "invalid_value", str(exc), param="name") from exc


@router.get("/tenants")
def admin_list_tenants(session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    tenants = session.scalars(select(Tenant).order_by(Tenant.created_at))
    return {"object": "list", "data": [tenant_public(t) for t in tenants]}


@router.post("/tenants/{tenant_id}/keys", status_code=201)
def admin_create_key(tenant_id: str, ctx: ContextDep, _admin: AdminDep) -> KeyPublic:
    with ctx.sessions.begin() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)
        row, plaintext = create_key(session, tenant_id)
        return KeyPublic(id=row.id, tenant_id=tenant_id, prefix=row.prefix, key=plaintext)


@router.post("/tenants/{tenant_id}/credits", status_code=201)
def admin_credit(tenant_id: str, body: CreditCreate, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)
        transfer = ledger.credit(session, tenant_id, body.tokens, body.memo)
        result = transfer_object(transfer)
        result["balance"] = vars(ledger.balance(session, tenant_id))
        return result
