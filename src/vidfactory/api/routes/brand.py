"""/v1/admin/tenants/{tenant_id}/brand: the tenant's brand mark, burned into every clip delivered to it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.schemas import BrandPublic, BrandSet
from vidfactory.branding import BrandError, clear_brand, set_brand
from vidfactory.db.models import Tenant

router = APIRouter(prefix="/v1/admin/tenants/{tenant_id}/brand", tags=["admin"])
admin_actor = "admin"


def _tenant(session: Session, tenant_id: str) -> Tenant:
    checked_id("tenant", tenant_id, "tenant_id")
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise not_found("tenant", tenant_id, "tenant_id")
    return tenant


def _public(tenant_id: str, stored: dict[str, Any]) -> BrandPublic:
    return BrandPublic(tenant_id=tenant_id, kind="text" if stored["text"] is not None else "logo",
                       text=stored["text"], logo_png_base64=stored["logo_png_base64"], corner=stored["corner"],
                       opacity=stored["opacity"])


@router.get("")
def get_brand(tenant_id: str, session: SessionDep, _admin: AdminDep) -> BrandPublic:
    tenant = _tenant(session, tenant_id)
    if tenant.brand is None:
        raise ApiError(404, "not_found", f"tenant {tenant_id} has no brand", param="tenant_id")
    return _public(tenant_id, tenant.brand)


@router.put("")
def put_brand(tenant_id: str, body: BrandSet, ctx: ContextDep, _admin: AdminDep) -> BrandPublic:
    """Sets or replaces the brand; one that cannot render (not a PNG, a glyph the font lacks) is refused."""
    try:
        with ctx.sessions.begin() as session:
            tenant = _tenant(session, tenant_id)
            stored = set_brand(session, tenant, text=body.text, logo_png_base64=body.logo_png_base64,
                               corner=body.corner, opacity=body.opacity, actor=admin_actor)
    except BrandError as exc:
        raise ApiError(400, "invalid_value", str(exc), param=exc.param) from exc
    return _public(tenant_id, stored)


@router.delete("")
def delete_brand(tenant_id: str, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        if not clear_brand(session, _tenant(session, tenant_id), actor=admin_actor):
            raise ApiError(404, "not_found", f"tenant {tenant_id} has no brand", param="tenant_id")
    return {"object": "tenant.brand.deleted", "tenant_id": tenant_id, "deleted": True}
