"""Voucher codes: an operator issues a code worth a voucher grant (the code is shown once and kept as its
SHA-256); the first tenant to redeem it gets the grant, once. The ledger moves the tokens
(ledger.grant_voucher), in the transaction that marks the code redeemed."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vidfactory.billing import audit, ledger
from vidfactory.db.models import Transfer, VoucherCode
from vidfactory.db.types import utcnow
from vidfactory.notify.events import voucher_event

__all__ = ["CodeNotRedeemable", "code_chars_max", "issue", "redeem"]

code_groups = 5  # of 4 hex digits each: 80 random bits, typed from a letter or a slide
code_chars_max = 64  # what a redeem request may send (spaces and lower case are forgiven)


class CodeNotRedeemable(Exception):
    """Unknown, already redeemed, or past its redeem-by date: one answer for all, so nothing can be probed."""


def _digest(code: str) -> str:
    normal = "".join(code.split()).upper()
    return hashlib.sha256(normal.encode()).hexdigest()


def issue(session: Session, tokens: int, expires_days: int, memo: str, redeem_by: datetime | None,
          actor: str = audit.system_actor) -> tuple[VoucherCode, str]:
    """The stored row and the code itself, which is never stored or shown again."""
    assert 0 < tokens <= ledger.tokens_max and expires_days >= 1
    code = "VF-" + "-".join(secrets.token_hex(2).upper() for _ in range(code_groups))
    row = VoucherCode(id=f"vc_{uuid.uuid4().hex[:20]}", code_sha256=_digest(code), prefix=code[:7], tokens=tokens,
                      expires_days=expires_days, memo=memo[:200], redeem_by=redeem_by)
    session.add(row)
    session.flush()
    audit.append(session, "voucher_code.issued", f"voucher_code:{row.id}",
                 {"prefix": row.prefix, "tokens": tokens, "expires_days": expires_days, "memo": row.memo}, actor)
    return row, code


def redeem(session: Session, tenant_id: str, code: str, actor: str = audit.system_actor) -> Transfer:
    """Grant the code's voucher to `tenant_id` (and record its event); CodeNotRedeemable otherwise. The
    code is claimed by an update guarded on its not being redeemed, so two redemptions grant once."""
    now = utcnow()
    row = session.scalar(select(VoucherCode).where(VoucherCode.code_sha256 == _digest(code[:code_chars_max])))
    if row is None or row.redeemed_at is not None or (row.redeem_by is not None and row.redeem_by <= now):
        raise CodeNotRedeemable("this voucher code is unknown, used or expired")
    claimed = session.execute(update(VoucherCode).where(VoucherCode.id == row.id, VoucherCode.redeemed_at.is_(None))
                              .values(redeemed_at=now, tenant_id=tenant_id)
                              .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        raise CodeNotRedeemable("this voucher code is unknown, used or expired")
    grant = ledger.grant_voucher(session, tenant_id, row.tokens, now + timedelta(days=row.expires_days),
                                 memo=row.memo or f"voucher code {row.prefix}…", actor=actor)
    session.execute(update(VoucherCode).where(VoucherCode.id == row.id).values(transfer_id=grant.id)
                    .execution_options(synchronize_session=False))
    audit.append(session, "voucher_code.redeemed", f"voucher_code:{row.id}",
                 {"tenant_id": tenant_id, "transfer_id": grant.id}, actor)
    voucher_event(session, grant)
    return grant
