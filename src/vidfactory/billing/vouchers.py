"""Compensation: a voucher for a job that failed through no fault of its caller, under the policy of the
price book the job pinned. The ledger moves the tokens (ledger.grant_voucher); this decides how many."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import compensation_tokens
from vidfactory.db.models import Job, Transfer
from vidfactory.db.types import utcnow

__all__ = ["compensate"]


def compensate(session: Session, job: Job, error_type: str) -> Transfer | None:
    """Grant the job's tenant the voucher its price book's policy gives for `error_type` (None: no
    voucher). Runs in the transaction that fails the job, so a failure and its voucher commit together."""
    book = pricebooks.get(session, job.price_book_version)
    tokens = compensation_tokens(book, job.total_tokens, error_type)
    if tokens <= 0:
        return None
    expires_at = utcnow() + timedelta(days=book.compensation.expires_days)
    return ledger.grant_voucher(session, job.tenant_id, tokens, expires_at,
                                memo=f"compensation for {job.id}: {error_type}")
