"""`vidfactory ledger verify`: recompute every ledger invariant of DESIGN.md from the rows themselves, and
walk the audit log's hash chain."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.billing import audit
from vidfactory.billing.pricebook import PriceBookBody, body_sha256
from vidfactory.db.models import Account, Job, PriceBook, Transfer

__all__ = ["verify"]

job_states_holding = {"queued", "in_progress"}
resolution_by_final_state = {"completed": "post", "failed": "void", "cancelled": "void"}


def verify(session: Session) -> list[str]:
    """Return one line per breach; an empty list means the ledger is sound."""
    transfers = list(session.scalars(select(Transfer).order_by(Transfer.seq)))
    breaches: list[str] = []
    breaches += _check_double_entry(session, transfers)
    breaches += _check_holds(transfers)
    breaches += _check_jobs(session, transfers)
    breaches += _check_price_books(session)
    chain_break = audit.verify_chain(session)
    if chain_break is not None:
        breaches.append(str(chain_break))
    return breaches


def _derived_balances(transfers: list[Transfer]) -> dict[str, dict[str, int]]:
    resolved = {t.pending_id for t in transfers if t.pending_id}
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t in transfers:
        if t.kind in ("credit", "post", "grant", "expire"):
            sums[t.debit_account_id]["debits_posted"] += t.amount
            sums[t.credit_account_id]["credits_posted"] += t.amount
        elif t.kind == "hold" and t.id not in resolved:
            sums[t.debit_account_id]["debits_pending"] += t.amount
            sums[t.credit_account_id]["credits_pending"] += t.amount
    return sums


def _check_double_entry(session: Session, transfers: list[Transfer]) -> list[str]:
    breaches = []
    sums = _derived_balances(transfers)
    net_posted = sum(s["credits_posted"] - s["debits_posted"] for s in sums.values())
    net_pending = sum(s["credits_pending"] - s["debits_pending"] for s in sums.values())
    if net_posted != 0 or net_pending != 0:
        breaches.append(f"accounts do not sum to zero: posted {net_posted}, pending {net_pending}")
    for t in transfers:
        if t.amount < 0 or (t.kind in ("credit", "hold", "grant") and t.amount == 0):
            breaches.append(f"transfer {t.id} has amount {t.amount}")
    for account in session.scalars(select(Account).where(Account.kind.in_(("tenant", "voucher")))):
        derived = sums.get(account.id, {})
        for column in ("debits_pending", "debits_posted", "credits_posted"):
            if getattr(account, column) != derived.get(column, 0):
                breaches.append(f"account {account.id} {column} is {getattr(account, column)}, "
                                f"transfers say {derived.get(column, 0)}")
        available = account.credits_posted - account.debits_posted - account.debits_pending
        if available < 0:
            breaches.append(f"account {account.id} is overdrawn: available {available}")
    return breaches


def _check_holds(transfers: list[Transfer]) -> list[str]:
    breaches = []
    by_id = {t.id: t for t in transfers}
    resolutions: dict[str, int] = defaultdict(int)
    for t in transfers:
        if t.kind == "expire":
            grant = by_id.get(t.pending_id or "")
            if grant is None or grant.kind != "grant" or grant.credit_account_id != t.debit_account_id:
                breaches.append(f"expire {t.id} names {t.pending_id}, which is not a grant of its account")
            continue
        if t.kind not in ("post", "void"):
            if t.pending_id is not None:
                breaches.append(f"{t.kind} transfer {t.id} names a hold")
            continue
        resolutions[t.pending_id or ""] += 1
        pending = by_id.get(t.pending_id or "")
        if pending is None or pending.kind != "hold":
            breaches.append(f"{t.kind} {t.id} resolves {t.pending_id}, which is not a hold")
            continue
        if (t.debit_account_id, t.credit_account_id) != (pending.debit_account_id, pending.credit_account_id):
            breaches.append(f"{t.kind} {t.id} moves between other accounts than hold {pending.id}")
        if t.kind == "post" and t.amount > pending.amount:
            breaches.append(f"post {t.id} of {t.amount} exceeds hold {pending.id} of {pending.amount}")
        if t.kind == "void" and t.amount != pending.amount:
            breaches.append(f"void {t.id} of {t.amount} differs from hold {pending.id} of {pending.amount}")
    breaches += [f"hold {hold_id} resolved {n} times" for hold_id, n in resolutions.items() if n > 1]
    return breaches


def _check_jobs(session: Session, transfers: list[Transfer]) -> list[str]:
    breaches = []
    resolution_of = {t.pending_id: t for t in transfers if t.pending_id}
    holds_by_job: dict[str, list[Transfer]] = defaultdict(list)
    for t in transfers:
        if t.kind == "hold" and t.job_id:
            holds_by_job[t.job_id].append(t)
    jobs = {job.id: job for job in session.scalars(select(Job))}
    for job in jobs.values():
        holds = holds_by_job.get(job.id, [])
        if sorted(h.id for h in holds) != sorted(job.hold_leg_ids):
            breaches.append(f"job {job.id} has holds {[h.id for h in holds]}, expected {job.hold_leg_ids}")
            continue
        for leg_id in job.hold_leg_ids:
            resolution = resolution_of.get(leg_id)
            if job.status in job_states_holding and resolution is not None:
                breaches.append(f"{job.status} job {job.id} has its hold {leg_id} already {resolution.kind}ed")
            expected = resolution_by_final_state.get(job.status)
            if expected is not None and (resolution is None or resolution.kind != expected):
                found = resolution.kind if resolution else "unresolved"
                breaches.append(f"{job.status} job {job.id} has its hold {leg_id} {found}, expected {expected}")
    for job_id in holds_by_job.keys() - jobs.keys():
        breaches.append(f"holds name job {job_id}, which does not exist")
    return breaches


def _check_price_books(session: Session) -> list[str]:
    breaches = []
    for book in session.scalars(select(PriceBook)):
        try:
            digest = body_sha256(PriceBookBody.model_validate(book.body))
        except ValueError as exc:
            breaches.append(f"price book v{book.version} no longer validates: {exc}")
            continue
        if digest != book.body_sha256:
            breaches.append(f"price book v{book.version} changed after it was published")
    return breaches
