"""The token ledger: every SQL statement that moves tokens lives here.

Two-phase transfers in the manner of TigerBeetle: a `hold` is a pending transfer from the tenant to
revenue; it is resolved exactly once by a `post` (amount ≤ held, the rest released) or a `void`.
Transfers are append-only. Every function runs inside the caller's transaction, so a job's state
change and its ledger movement commit together.

Vouchers live in a second account per tenant (`voucher:<tenant>`): a `grant` moves tokens into it from
issuance with an expiry, an `expire` moves what is left of a grant back. Vouchers are spent before paid
balance: a hold takes what it can from the voucher account and the rest from the paid account, as one
or two legs (pending transfers) of the same job; a settle charges the voucher leg first.

Lock order, the same in every function: the tenant's accounts (paid, then voucher), then the audit head
(every transfer is audited in the same transaction). PostgreSQL can then never deadlock two of them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from vidfactory.billing import audit
from vidfactory.db.models import Account, Transfer
from vidfactory.db.session import wait_in_line

__all__ = [
    "Balance",
    "Hold",
    "HoldAlreadyResolved",
    "InsufficientBalance",
    "LedgerError",
    "VoucherAlreadyExpired",
    "balance",
    "credit",
    "due_voucher_grants",
    "ensure_operator_accounts",
    "ensure_tenant_account",
    "expire_voucher",
    "grant_voucher",
    "hold",
    "hold_resolution",
    "hold_resolutions",
    "lock_for_hold",
    "outstanding_holds",
    "post",
    "settle",
    "tenant_account_id",
    "transfers_page",
    "unresolved_expired_holds",
    "void",
    "void_all",
    "voucher_account_id",
    "voucher_balance",
    "voucher_expiry_amount",
    "voucher_grants",
]

issuance_account_id = "operator:issuance"
revenue_account_id = "operator:revenue"
accounts_lock_space = 0x76660002  # advisory lock space of the line to a tenant's accounts (`wait_in_line`)
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


class VoucherAlreadyExpired(LedgerError):
    """A second expiry of the same grant: two sweepers met."""


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    posted: int


@dataclass(frozen=True)
class Hold:
    """A job's hold: one leg, or two when vouchers cover part of it. `id` is the paid leg when there is
    one (the job's hold_id), `voucher_id` the voucher leg of a split hold."""

    legs: tuple[Transfer, ...]

    @property
    def id(self) -> str:
        return self.legs[-1].id

    @property
    def voucher_id(self) -> str | None:
        return self.legs[0].id if len(self.legs) == 2 else None

    @property
    def amount(self) -> int:
        return sum(leg.amount for leg in self.legs)


def new_transfer_id() -> str:
    return f"tr_{uuid.uuid4().hex[:24]}"


def tenant_account_id(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def voucher_account_id(tenant_id: str) -> str:
    return f"voucher:{tenant_id}"


def _available(account: Account) -> int:
    return account.credits_posted - account.debits_posted - account.debits_pending


# Admission runs these on every submission, so each is built once (building a statement and its cache key
# costs about as much CPU as PostgreSQL's driver spends sending it). Every read of an account refreshes it
# (`populate_existing`), so the guarded reservation leaves the loaded objects alone: SQLAlchemy would evaluate
# its bound parameters there as None.
_accounts_locked = (select(Account).where(Account.id.in_(bindparam("ids", expanding=True))).order_by(Account.id)
                    .with_for_update().execution_options(populate_existing=True))
_reserved = (update(Account)
             .where(Account.id == bindparam("account_id"),
                    Account.credits_posted - Account.debits_posted - Account.debits_pending >= bindparam("amount"))
             .values(debits_pending=Account.debits_pending + bindparam("amount"))
             .execution_options(synchronize_session=False))


def _lock_accounts(session: Session, tenant_id: str) -> dict[str, Account]:
    """Both of a tenant's accounts, row-locked in one fixed order (PostgreSQL; SQLite's write
    transaction is already exclusive), read fresh."""
    wait_in_line(session, accounts_lock_space, tenant_id)
    ids = sorted((tenant_account_id(tenant_id), voucher_account_id(tenant_id)))
    rows = session.scalars(_accounts_locked, {"ids": ids})
    return {row.id: row for row in rows}


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
        session.add(Account(id=voucher_account_id(tenant_id), tenant_id=None, kind="voucher",
                            debits_pending=0, debits_posted=0, credits_posted=0))
        session.flush()
    return account_id


def _append(session: Session, transfer: Transfer, actor: str = audit.system_actor) -> Transfer:
    session.add(transfer)
    session.flush()
    audit.record_transfer(session, transfer, actor)
    return transfer


def credit(session: Session, tenant_id: str, amount: int, memo: str = "top-up",
           actor: str = audit.system_actor) -> Transfer:
    """A posted top-up from the operator's issuance account."""
    assert 0 < amount <= tokens_max, f"credit amount out of range: {amount}"
    account_id = tenant_account_id(tenant_id)
    assert account_id in _lock_accounts(session, tenant_id), f"no ledger account for tenant {tenant_id}"
    result = session.execute(
        update(Account).where(Account.id == account_id)
        .values(credits_posted=Account.credits_posted + amount))
    assert result.rowcount == 1, f"no ledger account for tenant {tenant_id}"
    return _append(session, Transfer(
        id=new_transfer_id(), kind="credit", debit_account_id=issuance_account_id,
        credit_account_id=account_id, amount=amount, tenant_id=tenant_id, memo=memo[:200]), actor)


def _reserve(session: Session, account_id: str, amount: int) -> bool:
    """The guarded UPDATE: reserve `amount` only if the account has it available."""
    return session.execute(_reserved, {"account_id": account_id, "amount": amount}).rowcount == 1


def lock_for_hold(session: Session, tenant_id: str) -> dict[str, Account]:
    """The tenant's accounts, locked until this transaction ends, for a `hold` in it: what must be counted
    exactly before a hold (the active-jobs limit) is counted after this, before anything is written."""
    return _lock_accounts(session, tenant_id)


def hold(session: Session, *, tenant_id: str, amount: int, job_id: str, expires_at: datetime,
         accounts: dict[str, Account] | None = None) -> Hold:
    """Admission: lock the tenant's accounts (or take those `lock_for_hold` locked), then check and
    reserve with guarded UPDATEs, so concurrent submissions can never overdraw. Vouchers are spent first;
    the paid balance covers the rest. Refused (InsufficientBalance), it has written nothing."""
    assert 0 < amount <= tokens_max, f"hold amount out of range: {amount}"
    if accounts is None:
        accounts = _lock_accounts(session, tenant_id)
    assert tenant_account_id(tenant_id) in accounts, f"accounts locked for another tenant than {tenant_id}"
    voucher = accounts.get(voucher_account_id(tenant_id))
    from_vouchers = min(amount, max(_available(voucher), 0)) if voucher is not None else 0
    from_paid = amount - from_vouchers
    if from_paid and not _reserve(session, tenant_account_id(tenant_id), from_paid):
        current = balance(session, tenant_id)
        raise InsufficientBalance(needed=amount, available=current.available + from_vouchers)
    if from_vouchers:
        assert _reserve(session, voucher_account_id(tenant_id), from_vouchers), "locked voucher balance moved"
    legs = []
    for account_id, part in ((voucher_account_id(tenant_id), from_vouchers), (tenant_account_id(tenant_id), from_paid)):
        if part:
            legs.append(_append(session, Transfer(
                id=new_transfer_id(), kind="hold", debit_account_id=account_id,
                credit_account_id=revenue_account_id, amount=part, tenant_id=tenant_id, job_id=job_id,
                expires_at=expires_at, memo="hold" if account_id.startswith("tenant:") else "hold (vouchers)")))
    return Hold(legs=tuple(legs))


def _resolve(session: Session, hold_id: str, kind: str, amount: int | None, memo: str) -> Transfer:
    """`amount` None resolves the whole hold (a void)."""
    pending = session.scalars(select(Transfer).where(Transfer.id == hold_id, Transfer.kind == "hold")).one()
    amount = pending.amount if amount is None else amount
    assert 0 <= amount <= pending.amount, f"{kind} of {amount} exceeds the hold of {pending.amount}"
    if pending.tenant_id is not None:
        _lock_accounts(session, pending.tenant_id)
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


def _legs_vouchers_first(session: Session, leg_ids: list[str]) -> list[Transfer]:
    assert 1 <= len(leg_ids) <= 2, f"a hold has one or two legs, not {leg_ids}"
    legs = list(session.scalars(select(Transfer).where(Transfer.id.in_(leg_ids), Transfer.kind == "hold")))
    assert len(legs) == len(leg_ids), f"holds {leg_ids} not found"
    return sorted(legs, key=lambda leg: not leg.debit_account_id.startswith("voucher:"))


def settle(session: Session, leg_ids: list[str], amount: int, memo: str = "settle") -> list[Transfer]:
    """Post a job's hold: `amount` is charged to the voucher leg first, the rest to the paid leg; what
    each leg held beyond its share is released."""
    legs = _legs_vouchers_first(session, leg_ids)
    assert 0 <= amount <= sum(leg.amount for leg in legs), f"settle of {amount} exceeds the hold"
    posts = []
    for leg in legs:
        share = min(amount, leg.amount)
        amount -= share
        posts.append(_resolve(session, leg.id, "post", share, memo))
    return posts


def void_all(session: Session, leg_ids: list[str], memo: str = "void") -> list[Transfer]:
    """Release every leg of a job's hold: nothing is charged."""
    return [_resolve(session, leg.id, "void", None, memo) for leg in _legs_vouchers_first(session, leg_ids)]


def grant_voucher(session: Session, tenant_id: str, amount: int, expires_at: datetime, memo: str,
                  actor: str = audit.system_actor) -> Transfer:
    """A posted voucher from issuance into the tenant's voucher account; what is unspent at `expires_at`
    goes back through `expire_voucher`."""
    assert 0 < amount <= tokens_max, f"voucher amount out of range: {amount}"
    account_id = voucher_account_id(tenant_id)
    assert account_id in _lock_accounts(session, tenant_id), f"no voucher account for tenant {tenant_id}"
    session.execute(update(Account).where(Account.id == account_id)
                    .values(credits_posted=Account.credits_posted + amount))
    return _append(session, Transfer(
        id=new_transfer_id(), kind="grant", debit_account_id=issuance_account_id, credit_account_id=account_id,
        amount=amount, tenant_id=tenant_id, expires_at=expires_at, memo=memo[:200]), actor)


def due_voucher_grants(session: Session, now: datetime, limit: int = 100) -> list[Transfer]:
    """Grants past their expiry that have not been expired yet."""
    expiry = aliased(Transfer)
    return list(session.scalars(
        select(Transfer).outerjoin(expiry, expiry.pending_id == Transfer.id)
        .where(Transfer.kind == "grant", expiry.seq.is_(None), Transfer.expires_at <= now)
        .order_by(Transfer.expires_at, Transfer.seq).limit(limit)))


def voucher_expiry_amount(grants: list[Transfer], expired: dict[str, int], spent: int, pending: int,
                          available: int, grant_id: str) -> int:
    """What is left of grant `grant_id` (a pure function of the voucher account's transfers).

    Vouchers are consumed soonest-expiring first; a grant that already expired keeps what it had
    consumed when it expired. What the last unexpired grant leaves is the whole available balance: tokens
    a voided hold returns after their grant expired go with it, so an account with no live grants is
    empty."""
    ordered = sorted(grants, key=lambda g: (g.expires_at, g.seq))
    consumption = spent + pending - sum(g.amount - expired[g.id] for g in ordered if g.id in expired)
    consumption = max(consumption, 0)
    live = [g for g in ordered if g.id not in expired]
    assert grant_id in {g.id for g in live}, f"grant {grant_id} is not live"
    if live[-1].id == grant_id:
        return max(available, 0)
    for g in live:
        used = min(g.amount, consumption)
        consumption -= used
        if g.id == grant_id:
            return max(min(g.amount - used, available), 0)
    raise AssertionError("unreachable: grant_id is live")


def expire_voucher(session: Session, grant_id: str) -> Transfer:
    """Return what is left of an expired grant to issuance (possibly 0 tokens: the grant is then marked
    expired all the same). A second expiry of the grant fails at the unique pending_id."""
    grant = session.scalars(select(Transfer).where(Transfer.id == grant_id, Transfer.kind == "grant")).one()
    tenant_id = grant.tenant_id
    assert tenant_id is not None
    account = _lock_accounts(session, tenant_id)[voucher_account_id(tenant_id)]
    outflow = select(Transfer).where(Transfer.debit_account_id == account.id)
    grants = list(session.scalars(select(Transfer).where(Transfer.kind == "grant",
                                                         Transfer.credit_account_id == account.id)))
    expired = {t.pending_id: t.amount for t in session.scalars(outflow.where(Transfer.kind == "expire"))}
    spent = session.scalar(select(func.coalesce(func.sum(Transfer.amount), 0))
                           .where(Transfer.debit_account_id == account.id, Transfer.kind == "post"))
    if grant_id in expired:
        raise VoucherAlreadyExpired(f"voucher grant {grant_id} already expired")
    amount = voucher_expiry_amount(grants, expired, int(spent), account.debits_pending, _available(account),
                                   grant_id)
    try:
        with session.begin_nested():
            expiry = Transfer(id=new_transfer_id(), kind="expire", debit_account_id=account.id,
                              credit_account_id=issuance_account_id, amount=amount, pending_id=grant_id,
                              tenant_id=tenant_id, memo=f"voucher {grant_id} expired")
            session.add(expiry)
            session.flush()
    except IntegrityError as exc:
        raise VoucherAlreadyExpired(f"voucher grant {grant_id} already expired") from exc
    result = session.execute(
        update(Account).where(Account.id == account.id,
                              Account.credits_posted - Account.debits_posted - Account.debits_pending >= amount)
        .values(debits_posted=Account.debits_posted + amount))
    assert result.rowcount == 1, f"voucher account {account.id} cannot expire {amount}"
    audit.record_transfer(session, expiry)
    return expiry


def voucher_balance(session: Session, tenant_id: str) -> Balance:
    account = session.get(Account, voucher_account_id(tenant_id), populate_existing=True)
    if account is None:
        return Balance(available=0, pending=0, posted=0)
    posted = account.credits_posted - account.debits_posted
    return Balance(available=posted - account.debits_pending, pending=account.debits_pending, posted=posted)


def hold_resolution(session: Session, hold_id: str) -> Transfer | None:
    return session.scalars(select(Transfer).where(Transfer.pending_id == hold_id)).one_or_none()


_resolutions = select(Transfer).where(Transfer.pending_id.in_(bindparam("hold_ids", expanding=True)))


def hold_resolutions(session: Session, hold_ids: list[str]) -> dict[str, Transfer]:
    """One query for a page of holds: hold id → its post or void (unresolved holds are absent). Every poll
    of a video reads them: the statement is built once."""
    rows = session.scalars(_resolutions, {"hold_ids": hold_ids}) if hold_ids else []
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


def outstanding_holds(session: Session) -> tuple[int, int]:
    """(holds not yet resolved, tokens they hold). Every post or void resolves exactly one hold (the
    unique pending_id), so the count is holds minus resolutions; the tokens are the accounts' pending
    debits, which every hold raises and every resolution lowers."""
    kinds = {kind: int(count) for kind, count in session.execute(
        select(Transfer.kind, func.count()).where(Transfer.kind.in_(("hold", "post", "void"))).group_by(Transfer.kind))}
    tokens = session.scalar(select(func.coalesce(func.sum(Account.debits_pending), 0)))
    return kinds.get("hold", 0) - kinds.get("post", 0) - kinds.get("void", 0), int(tokens or 0)


def unresolved_expired_holds(session: Session, now: datetime, limit: int = 100) -> list[Transfer]:
    resolution = aliased(Transfer)
    return list(session.scalars(
        select(Transfer)
        .outerjoin(resolution, resolution.pending_id == Transfer.id)
        .where(Transfer.kind == "hold", resolution.seq.is_(None), Transfer.expires_at < now)
        .order_by(Transfer.seq).limit(limit)))


def voucher_grants(session: Session, tenant_id: str, limit: int = 100) -> list[tuple[Transfer, Transfer | None]]:
    """The tenant's voucher grants, newest first, each with its expiry transfer (None while live)."""
    assert 1 <= limit <= 1000
    expiry = aliased(Transfer)
    return [(grant, expired) for grant, expired in session.execute(
        select(Transfer, expiry).outerjoin(expiry, expiry.pending_id == Transfer.id)
        .where(Transfer.kind == "grant", Transfer.tenant_id == tenant_id)
        .order_by(Transfer.seq.desc()).limit(limit))]
