"""/v1/usage and /v1/statements/{YYYY-MM} (JSON, CSV, PDF), and the operator's view of any tenant's."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, CallerDep, ContextDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.billing.statements import StatementError, statement, statement_file, usage
from vidfactory.db.models import Tenant

router = APIRouter(tags=["billing"])

day_pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
FromDay = Annotated[str | None, Query(alias="from", min_length=10, max_length=10, pattern=day_pattern)]
ToDay = Annotated[str | None, Query(alias="to", min_length=10, max_length=10, pattern=day_pattern)]
Grouping = Literal["day", "model", "key", "template", "batch"]
Format = Literal["json", "csv", "pdf"]
statement_responses: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/csv": {}, "application/pdf": {}}}}


def _usage(ctx: ContextDep, tenant_id: str, start: str | None, end: str | None, group_by: str) -> dict[str, Any]:
    try:
        with ctx.sessions() as session:
            return usage(session, tenant_id, start=start, end=end, group_by=group_by)
    except StatementError as exc:
        raise ApiError(400, "invalid_value", str(exc), param="from") from exc


def _statement(ctx: ContextDep, tenant_id: str, month: str, fmt: str) -> Response | dict[str, Any]:
    try:
        with ctx.sessions.begin() as session:
            body = statement(session, tenant_id, month)
    except StatementError as exc:
        raise ApiError(400, "invalid_value", str(exc), param="month") from exc
    if fmt == "json":
        return body
    download = statement_file(body, fmt)
    return Response(download.content, media_type=download.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{download.filename}"'})


def _tenant_exists(session: Session, tenant_id: str) -> None:
    checked_id("tenant", tenant_id)
    if session.get(Tenant, tenant_id) is None:
        raise not_found("tenant", tenant_id)


@router.get("/v1/usage")
def get_usage(ctx: ContextDep, caller: CallerDep, start: FromDay = None, end: ToDay = None,
              group_by: Grouping = "day") -> dict[str, Any]:
    """Charged jobs and tokens in [from, to) (UTC dates; default the last 30 days), grouped."""
    return _usage(ctx, caller.tenant_id, start, end, group_by)


@router.get("/v1/statements/{month}", responses=statement_responses)
def get_statement(month: str, ctx: ContextDep, caller: CallerDep, format: Format = "json"):
    """Opening balance, top-ups, charges per model and price-book version, refunds, vouchers, closing
    balance. A month that has ended never changes."""
    return _statement(ctx, caller.tenant_id, month, format)


@router.get("/v1/admin/tenants/{tenant_id}/usage")
def admin_usage(tenant_id: str, ctx: ContextDep, _admin: AdminDep, start: FromDay = None, end: ToDay = None,
                group_by: Grouping = "day") -> dict[str, Any]:
    with ctx.sessions() as session:
        _tenant_exists(session, tenant_id)
    return _usage(ctx, tenant_id, start, end, group_by)


@router.get("/v1/admin/tenants/{tenant_id}/statements/{month}", responses=statement_responses)
def admin_statement(tenant_id: str, month: str, ctx: ContextDep, _admin: AdminDep, format: Format = "json"):
    with ctx.sessions() as session:
        _tenant_exists(session, tenant_id)
    return _statement(ctx, tenant_id, month, format)
