"""/v1/admin/plans: the plans tenants are on (priority, rate and job limits, the step-cache permission),
behind the admin token. Every change is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.schemas import PlanCreate, PlanPublic, PlanUpdate
from vidfactory.db.models import Plan
from vidfactory.tenancy import (InvalidPlan, PlanExists, create_plan, plan_fields, plans_with_tenants,
                                update_plan)

router = APIRouter(prefix="/v1/admin/plans", tags=["admin"])
admin_actor = "admin"


def plan_public(plan: Plan, tenants: int) -> PlanPublic:
    return PlanPublic(id=plan.id, tenants=tenants, **{field: getattr(plan, field) for field in plan_fields})


def _plan(session: Session, plan_id: str) -> PlanPublic:
    checked_id("plan", plan_id)
    found = plans_with_tenants(session, plan_id)
    if not found:
        raise not_found("plan", plan_id)
    return plan_public(*found[0])


@router.get("")
def admin_list_plans(session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    plans = plans_with_tenants(session)
    return {"object": "list", "data": [plan_public(plan, tenants) for plan, tenants in plans]}


@router.post("", status_code=201)
def admin_create_plan(body: PlanCreate, ctx: ContextDep, _admin: AdminDep) -> PlanPublic:
    try:
        with ctx.sessions.begin() as session:
            plan = create_plan(session, body.id, body.model_dump(exclude={"id"}), actor=admin_actor)
            return plan_public(plan, 0)
    except PlanExists as exc:
        raise ApiError(409, "plan_exists", str(exc), param="id") from exc
    except InvalidPlan as exc:
        raise ApiError(400, "invalid_value", str(exc), param=exc.param) from exc


@router.get("/{plan_id}")
def admin_get_plan(plan_id: str, session: SessionDep, _admin: AdminDep) -> PlanPublic:
    return _plan(session, plan_id)


@router.patch("/{plan_id}")
def admin_update_plan(plan_id: str, body: PlanUpdate, ctx: ContextDep, _admin: AdminDep) -> PlanPublic:
    """Change the fields sent. Jobs already submitted keep the priority, concurrency and step-cache
    permission they were submitted with; the rate and active-job limits apply to the next request."""
    checked_id("plan", plan_id)
    try:
        with ctx.sessions.begin() as session:
            if update_plan(session, plan_id, body.model_dump(exclude_unset=True), actor=admin_actor) is None:
                raise not_found("plan", plan_id)
            return _plan(session, plan_id)
    except InvalidPlan as exc:
        raise ApiError(400, "invalid_value", str(exc), param=exc.param) from exc
