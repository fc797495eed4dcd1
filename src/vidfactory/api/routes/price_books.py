"""/v1/price_books and /v1/admin/price_books: published price book versions (immutable once published)
and tenants' contract pins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found, validation_message
from vidfactory.api.render import timestamp
from vidfactory.api.schemas import PriceBookPin, PriceBookPreviewRequest, PriceBookSample
from vidfactory.billing import pricebooks
from vidfactory.billing.pricebook import PriceBookBody, Quote
from vidfactory.db.models import PriceBook, Tenant

router = APIRouter(tags=["billing"])
admin_actor = "admin"


def price_book_object(row: PriceBook, in_force: int | None = None) -> dict[str, Any]:
    return {"object": "price_book", "version": row.version, "body": row.body, "sha256": row.body_sha256,
            "published_at": timestamp(row.published_at), "in_force": row.version == in_force}


@router.get("/v1/price_books")
def list_price_books(session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """Every published version, oldest first; `in_force` marks the one that prices the caller's requests
    (its contract pin, else the newest)."""
    version, _ = pricebooks.for_tenant(session, caller.tenant_id)
    return {"object": "list", "data": [price_book_object(row, version) for row in pricebooks.list_versions(session)]}


@router.post("/v1/admin/price_books", status_code=201)
def publish_price_book(body: PriceBookBody, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """Publish a new version (validated here; never changed afterwards). Jobs keep the version they
    pinned at submission, and tenants pinned to an older version keep it."""
    with ctx.sessions.begin() as session:
        try:
            version = pricebooks.publish(session, body, actor=admin_actor)
        except ValueError as exc:
            raise ApiError(400, "invalid_value", str(exc), param="compensation.error_types") from exc
        current, _ = pricebooks.current(session)
        return price_book_object(session.get(PriceBook, version), current)


def sample_of(sent: PriceBookSample) -> pricebooks.Sample:
    width, height = (int(side) for side in sent.size.split("x"))
    return pricebooks.Sample(sent.model, width, height, sent.seconds, sent.input_tokens)


def priced_object(priced: Quote | str) -> dict[str, Any]:
    if isinstance(priced, str):
        return {"quote": None, "refused": priced}
    return {"quote": {"tier": priced.tier, "duration_bucket_s": priced.duration_bucket_s, "method": priced.method,
                      "input_tokens": priced.input_tokens, "output_tokens": priced.output_tokens,
                      "total_tokens": priced.total_tokens,
                      "amount": {"currency": priced.currency, "value": str(priced.amount)}}, "refused": None}


@router.post("/v1/admin/price_books/preview")
def preview_price_book(request: PriceBookPreviewRequest, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """What the sample request would cost under the proposed book and under the one in force (the newest
    version); nothing is published. A side whose tables cannot price the sample says why in `refused`."""
    try:
        body = PriceBookBody.model_validate(request.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(["body", *(str(part) for part in first["loc"])])
        raise ApiError(400, "invalid_value", validation_message(first), param=param) from exc
    with ctx.sessions() as session:
        shown = pricebooks.preview(session, body, sample_of(request.sample))
    return {"object": "price_book_preview", "in_force": {"version": shown.in_force_version,
                                                         **priced_object(shown.in_force)},
            "proposed": priced_object(shown.proposed)}


def _tenant(session: Session, tenant_id: str) -> Tenant:
    checked_id("tenant", tenant_id)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise not_found("tenant", tenant_id)
    return tenant


@router.put("/v1/admin/tenants/{tenant_id}/price_book")
def pin_price_book(tenant_id: str, body: PriceBookPin, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """Pin the tenant's contract to a version (`version` null: follow the newest)."""
    with ctx.sessions.begin() as session:
        _tenant(session, tenant_id)
        try:
            pricebooks.pin_tenant(session, tenant_id, body.version, actor=admin_actor)
        except LookupError as exc:
            raise ApiError(400, "invalid_value", str(exc), param="version") from exc
        in_force, _ = pricebooks.for_tenant(session, tenant_id)
    return {"object": "price_book_pin", "tenant_id": tenant_id, "version": body.version, "in_force": in_force}
