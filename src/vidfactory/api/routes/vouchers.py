"""/v1/vouchers and /v1/admin/tenants/{id}/vouchers: the voucher balance (spent before paid balance,
expiring), an operator's grant by hand, and voucher codes (issued by an operator, redeemed by a tenant)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, CallerDep, ContextDep, IdempotencyKeyHeader, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import timestamp, transfer_object
from vidfactory.api.schemas import (VoucherCodeCreate, VoucherGrant, VoucherGrantPublic, VoucherRedeem,
                                    VouchersPublic)
from vidfactory.billing import ledger, voucher_codes
from vidfactory.db.models import Tenant, Transfer
from vidfactory.db.types import utcnow
from vidfactory.idempotency import fingerprint, run_once
from vidfactory.notify.events import voucher_event

router = APIRouter(tags=["billing"])
grants_listed_max = 100


def vouchers_public(session: Session, tenant_id: str) -> VouchersPublic:
    current = ledger.voucher_balance(session, tenant_id)
    grants = [VoucherGrantPublic(id=grant.id, amount=grant.amount, memo=grant.memo,
                                 created_at=timestamp(grant.created_at), expires_at=timestamp(grant.expires_at),
                                 expired=None if expiry is None else expiry.amount)
              for grant, expiry in ledger.voucher_grants(session, tenant_id, grants_listed_max)]
    return VouchersPublic(available=current.available, pending=current.pending, posted=current.posted,
                          grants=grants)


def grant_object(session: Session, transfer: Transfer) -> dict[str, Any]:
    result = transfer_object(transfer)
    result["expires_at"] = timestamp(transfer.expires_at)
    result["vouchers"] = vars(ledger.voucher_balance(session, transfer.tenant_id))
    return result


@router.get("/v1/vouchers")
def get_vouchers(session: SessionDep, caller: CallerDep) -> VouchersPublic:
    """The voucher balance and the latest grants (newest first)."""
    return vouchers_public(session, caller.tenant_id)


@router.post("/v1/admin/tenants/{tenant_id}/vouchers", status_code=201)
def grant_voucher(tenant_id: str, body: VoucherGrant, ctx: ContextDep, _admin: AdminDep,
                  idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Grant a voucher by hand, with a reason (kept in the ledger memo and the audit log). Send an
    Idempotency-Key so that a retried request never grants twice."""
    checked_id("tenant", tenant_id)
    with ctx.sessions() as session:
        if session.get(Tenant, tenant_id) is None:
            raise not_found("tenant", tenant_id)

    def grant(session: Session) -> tuple[int, dict[str, Any]]:
        expires_at = utcnow() + timedelta(days=body.expires_days)
        transfer = ledger.grant_voucher(session, tenant_id, body.tokens, expires_at, memo=body.reason, actor="admin")
        voucher_event(session, transfer)
        return 201, grant_object(session, transfer)

    idempotency = None
    if idempotency_key is not None:
        idempotency = (idempotency_key, fingerprint(f"/v1/admin/tenants/{tenant_id}/vouchers", body.model_dump()))
    outcome = run_once(ctx.sessions, tenant_id, idempotency, grant, scope="admin-voucher",
                       reservation_s=ctx.settings.idempotency_reservation_s)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)


@router.post("/v1/vouchers/redeem", status_code=201)
def redeem_voucher_code(body: VoucherRedeem, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Redeem a voucher code (once, by the first tenant to send it): answers the voucher grant it made."""
    try:
        with ctx.sessions.begin() as session:
            return grant_object(session, voucher_codes.redeem(session, caller.tenant_id, body.code))
    except voucher_codes.CodeNotRedeemable as exc:
        raise ApiError(400, "voucher_code_invalid", str(exc), param="code") from exc


@router.post("/v1/admin/voucher_codes", status_code=201)
def issue_voucher_code(body: VoucherCodeCreate, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """Issue a voucher code; `code` is in this answer only (it is kept as a digest)."""
    redeem_by = None if body.redeem_within_days is None else utcnow() + timedelta(days=body.redeem_within_days)
    with ctx.sessions.begin() as session:
        row, code = voucher_codes.issue(session, body.tokens, body.expires_days, body.reason, redeem_by,
                                        actor="admin")
        return {"id": row.id, "object": "voucher_code", "code": code, "prefix": row.prefix, "tokens": row.tokens,
                "expires_days": row.expires_days, "memo": row.memo, "redeem_by": timestamp(row.redeem_by),
                "created_at": timestamp(row.created_at)}
