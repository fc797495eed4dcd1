"""The token ledger: every SQL statement that moves tokens lives here.

Two-phase transfers in the manner of TigerBeetle: a `hold` is a pending transfer from the tenant to
revenue; it is resolved exactly once by a `post` (amount ≤ held, the rest released) or a `void`.
Transfers are append-only. Every function runs inside the caller's transaction, so a job's state
change and its ledger movement commit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from vidfactory.db.models import Account, Transfer

__all__ = [
    "Balance",
    "HoldAlreadyResolved",
    "InsufficientBalance",
    "LedgerError",
    "balance",
    "credit",
    "ensure_operator_accounts",
    "ensure_tenant_account",
    "hold",
    "hold_resolution",
    "hold_resolutions",
    "post",
    "tenant_account_id",
    "transfers_page",
    "unresolved_expired_holds",
    "void",
]

issuance_account_id = "operator:issuance"
revenue_account_id = "operator:revenue"
tokens_max = 10**15  # far above any real balance; keeps every sum inside a signed 64-bit column


class LedgerError(Exception):
    """Base of ledger failures."""


class InsufficientBalance(LedgerError):
    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"this request needs {needed} tokens; {available} are available")
        self.needed = needed
        self.available = available


class HoldAlreadyResolved(LedgerError):
    """A second post or void of the same hold: a stale worker or a double settle."""


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    posted: int


def new_transfer_id() -> str:
    return f"tr_{uuid.uuid4().hex[:24]}"


def tenant_account_id(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def ensure_operator_accounts(session: Session) -> None:
    for account_id, kind in ((issuance_account_id, "issuance"), (revenue_account_id, "revenue")):
        if session.get(Account, account_id) is None:
            session.add(Account(id=account_id, kind=kind, debits_pending=0, debits_posted=0, credits_posted=0))
    session.flush()


def ensure_tenant_account(session: Session, tenant_id: str) -> str:
    account_id = tenant_account_id(tenant_id)
    if session.get(Account, account_id) is None:
        session.add(Account(id=account_id, tenant_id=tenant_id, kind="tenant",
                            debits_pending=0, debits_posted=0, credits_posted=0))
        session.flush()
    return account_id


def _append(session: Session, transfer: Transfer) -> Transfer:
    session.add(transfer)
    session.flush()
    return transfer


def credit(session: Session, tenant_id: str, amount: int, memo: str = "top-up") -> Transfer:
    """A posted top-up from the operator's issuance account."""
    assert 0 < amount <= tokens_max, f"credit amount out of range: {amount}"
    account_id = tenant_account_id(tenant_id)
    transfer = _append(session, Transfer(
        id=new_transfer_id(), kind="credit", debit_account_id=issuance_account_id,
        credit_account_id=account_id, amount=amount, tenant_id=tenant_id, memo=memo[:200]))
    result = session.execute(
        update(Account).where(Account.id == account_id)
        .values(credits_posted=Account.credits_posted + amount))
    assert result.rowcount == 1, f"no ledger account for tenant {tenant_id}"
    return transfer


def hold(session: Session, *, tenant_id: str, amount: int, job_id: str, expires_at: datetime) -> Transfer:
    """Admission: check and reserve in one guarded UPDATE (row lock on PostgreSQL, write lock on
    SQLite), so concurrent submissions can never overdraw."""
    assert 0 < amount <= tokens_max, f"hold amount out of range: {amount}"
    account_id = tenant_account_id(tenant_id)
    result = session.execute(
        update(Account)
        .where(Account.id == account_id,
               Account.credits_posted - Account.debits_posted - Account.debits_pending >= amount)
        .values(debits_pending=Account.debits_pending + amount))
    if result.rowcount != 1:
        raise InsufficientBalance(needed=amount, available=balance(session, tenant_id).available)
    return _append(session, Transfer(
        id=new_transfer_id(), kind="hold", debit_account_id=account_id, credit_account_id=revenue_account_id,
        amount=amount, tenant_id=tenant_id, job_id=job_id, expires_at=expires_at, memo="hold"))


def _resolve(session: Session, hold_id: str, kind: str, amount: int | None, memo: str) -> Transfer:
    """`amount` None resolves the whole hold (a void)."""
    pending = session.scalars(select(Transfer).where(Transfer.id == hold_id, Transfer.kind == "hold")).one()
    amount = pending.amount if amount is None else amount
    assert 0 <= amount <= pending.amount, f"{kind} of {amount} exceeds the hold of {pending.amount}"
    try:
        # The unique index on pending_id makes this insert the guard: a second resolution fails here,
        # before any balance moves.
        with session.begin_nested():
            resolution = _append(session, Transfer(
                id=new_transfer_id(), kind=kind, debit_account_id=pending.debit_account_id,
                credit_account_id=pending.credit_account_id, amount=amount, pending_id=pending.id,
                tenant_id=pending.tenant_id, job_id=pending.job_id, memo=memo[:200]))
    except IntegrityError as exc:
        raise HoldAlreadyResolved(f"hold {hold_id} was already posted or voided") from exc
    result = session.execute(
        update(Account)
        .where(Account.id == pending.debit_account_id, Account.debits_pending >= pending.amount)
        .values(debits_pending=Account.debits_pending - pending.amount,
                debits_posted=Account.debits_posted + (amount if kind == "post" else 0)))
    assert result.rowcount == 1, f"account {pending.debit_account_id} pending balance below hold {hold_id}"
    return resolution


def post(session: Session, hold_id: str, amount: int, memo: str = "settle") -> Transfer:
    """Settle a hold: `amount` is charged, the rest of the hold is released."""
    return _resolve(session, hold_id, "post", amount, memo)


def void(session: Session, hold_id: str, memo: str = "void") -> Transfer:
    """Release the whole hold: nothing is charged."""
    return _resolve(session, hold_id, "void", None, memo)


def hold_resolution(session: Session, hold_id: str) -> Transfer | None:
    return session.scalars(select(Transfer).where(Transfer.pending_id == hold_id)).one_or_none()


def hold_resolutions(session: Session, hold_ids: list[str]) -> dict[str, Transfer]:
    """One query for a page of holds: hold id → its post or void (unresolved holds are absent)."""
    rows = session.scalars(select(Transfer).where(Transfer.pending_id.in_(hold_ids))) if hold_ids else []
    return {row.pending_id: row for row in rows}


def balance(session: Session, tenant_id: str) -> Balance:
    account = session.get(Account, tenant_account_id(tenant_id), populate_existing=True)
    assert account is not None, f"no ledger account for tenant {tenant_id}"
    posted = account.credits_posted - account.debits_posted
    return Balance(available=posted - account.debits_pending, pending=account.debits_pending, posted=posted)


def transfers_page(session: Session, tenant_id: str, *, after_seq: int, limit: int) -> list[Transfer]:
    assert 1 <= limit <= 1000
    return list(session.scalars(
        select(Transfer).where(Transfer.tenant_id == tenant_id, Transfer.seq > after_seq)
        .order_by(Transfer.seq).limit(limit)))


def unresolved_expired_holds(session: Session, now: datetime, limit: int = 100) -> list[Transfer]:
    resolution = aliased(Transfer)
    return list(session.scalars(
        select(Transfer)
        .outerjoin(resolution, resolution.pending_id == Transfer.id)
        .where(Transfer.kind == "hold", resolution.seq.is_(None), Transfer.expires_at < now)
        .order_by(Transfer.seq).limit(limit)))
