"""Recovery passes any process may run: expired leases go back to the queue (or fail), expired holds
are voided with their jobs, expired content is deleted from storage. Each job is handled in its own
transaction, guarded like every change."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from vidfactory.billing import ledger
from vidfactory.db.models import Job, MaintenanceRun
from vidfactory.db.session import SessionFactory
from vidfactory.failures import ErrorType
from vidfactory.jobs import queue
from vidfactory.notify.alerts import raise_alert, recent_alerts
from vidfactory.settings import Settings
from vidfactory.storage.base import Storage, StorageError
from vidfactory.storage.retention import expiring_keys, referenced_keys

__all__ = ["alert_on_failure_rate", "decide_overdue_reviews", "delete_expiring_content", "delete_orphans",
           "expire_vouchers", "failure_rate_alert_kind", "last_check", "ledger_verify_check", "reap_expired_leases", "record_check",
           "sweep_expired_content", "sweep_expired_holds"]

failure_rate_alert_kind = "job_failure_rate"
ledger_verify_check = "ledger_verify"
check_detail_chars_max = 2000
expiring_jobs_max = 100  # jobs one content sweep handles
orphans_max = 1000  # objects one orphan scan deletes
orphan_keys_per_check = 500  # listed keys looked up in the database at once

log = logging.getLogger(__name__)


def reap_expired_leases(sessions: SessionFactory, now: datetime) -> int:
    """A worker that stopped heartbeating lost its job: requeue it (attempt + 1 at the next claim) or,
    when its attempts are spent, fail it and void its hold."""
    with sessions() as session:
        expired = [(job.id, job.lease_owner, job.attempts, job.attempts_max)
                   for job in queue.expired_leases(session, now)]
    handled = 0
    for job_id, owner, attempts, attempts_max in expired:
        try:
            with sessions.begin() as session:
                if attempts < attempts_max:
                    queue.requeue(session, job_id, owner=owner, run_after=now, error_type=ErrorType.worker_lost,
                                  message=f"lease of {owner} expired on attempt {attempts}")
                else:
                    queue.fail(session, job_id, expected=("in_progress",), owner=owner,
                               error_type=ErrorType.worker_lost, message=f"lease expired on the last of {attempts_max} attempts")
            handled += 1
            log.warning("job %s: lease of %s expired (attempt %d of %d)", job_id, owner, attempts, attempts_max)
        except queue.StaleJob:
            continue  # the worker came back and finished, or another reaper got there first
    return handled


def sweep_expired_holds(sessions: SessionFactory, now: datetime) -> int:
    """No hold outlives its job: a hold past its expiry fails its unfinished job and is voided."""
    with sessions() as session:
        expired = [(hold.id, hold.job_id) for hold in ledger.unresolved_expired_holds(session, now)]
    swept = 0
    for hold_id, job_id in expired:
        try:
            with sessions.begin() as session:
                job = session.get(Job, job_id) if job_id else None
                if job is not None and job.status in ("queued", "in_progress"):
                    queue.fail(session, job.id, expected=(job.status,), owner=None, error_type=ErrorType.hold_expired,
                               message="the job's hold expired before it finished")
                else:
                    ledger.void(session, hold_id, memo="hold expired")
            swept += 1
        except (queue.StaleJob, ledger.HoldAlreadyResolved):
            continue
    return swept


def decide_overdue_reviews(sessions: SessionFactory, now: datetime) -> int:
    """Jobs held for review past their plan's deadline get the plan's action (approve or refund), one job
    per transaction, so that a poller waiting on one always sees it end."""
    with sessions() as session:
        overdue = queue.overdue_reviews(session, now)
    decided = 0
    for job_id in overdue:
        try:
            with sessions.begin() as session:
                status = queue.decide_overdue_review(session, job_id, now)
            decided += 1
            log.warning("video %s: review deadline passed undecided; now %s", job_id, status)
        except queue.StaleJob:
            continue  # an admin decided, the tenant cancelled, or another worker got there first
    return decided


def expire_vouchers(sessions: SessionFactory, now: datetime) -> int:
    """Vouchers expire through the ledger: what is left of each grant past its expiry goes back to
    issuance as an `expire` transfer, one grant per transaction."""
    with sessions() as session:
        due = [grant.id for grant in ledger.due_voucher_grants(session, now)]
    expired = 0
    for grant_id in due:
        try:
            with sessions.begin() as session:
                ledger.expire_voucher(session, grant_id)
            expired += 1
        except ledger.VoucherAlreadyExpired:
            continue  # another sweeper got there first
    return expired


def alert_on_failure_rate(sessions: SessionFactory, settings: Settings, now: datetime) -> bool:
    """Raise one operator alert per window while jobs fail above the configured rate; True when raised.
    Two workers deciding at once may both raise it: a duplicate alert is harmless, a missed one is not."""
    since = now - timedelta(seconds=settings.failure_alert_window_s)
    with sessions.begin() as session:
        failed, finished = queue.finished_since(session, since)
        if failed < settings.failure_alert_jobs_min or failed < settings.failure_alert_ratio_min * finished:
            return False
        last = recent_alerts(session, 1, kind=failure_rate_alert_kind)
        if last and last[0].created_at >= since:
            return False
        raise_alert(session, failure_rate_alert_kind,
                    f"{failed} of {finished} jobs failed in the last {settings.failure_alert_window_s:g} s")
    return True


def record_check(session: Session, name: str, ok: bool, detail: str, now: datetime) -> None:
    """The outcome of a periodic check (`ledger verify`), replacing the previous one: `/metrics` exports it."""
    row = session.get(MaintenanceRun, name, with_for_update=True)
    if row is None:
        session.add(MaintenanceRun(name=name, ok=ok, detail=detail[:check_detail_chars_max], ran_at=now))
        return
    row.ok, row.detail, row.ran_at = ok, detail[:check_detail_chars_max], now


def last_check(session: Session, name: str) -> MaintenanceRun | None:
    return session.get(MaintenanceRun, name)


def sweep_expired_content(sessions: SessionFactory, storage: Storage, now: datetime,
                          limit: int = expiring_jobs_max) -> int:
    """Delete the files of jobs past their expiry (clip, previews, reference copy) and the rows that name
    them. Per job, in this order: mark it expiring (its content answers 410 from then), delete its
    files, forget them. A sweep that stops anywhere leaves the job marked, and the next sweep, which
    starts with marked jobs, finishes it: no row ever names a deleted file of a job not marked, and no
    file outlives its rows. Returns the jobs finished."""
    with sessions() as session:
        unfinished = queue.content_expiring(session, limit)
        due = queue.content_due(session, now, limit - len(unfinished))
    swept = 0
    for job_id in unfinished + due:
        try:
            if job_id in due:
                with sessions.begin() as session:
                    queue.mark_content_expiring(session, job_id, now)
            delete_expiring_content(sessions, storage, job_id)
        except queue.StaleJob:
            continue  # another sweep got there first
        except StorageError as exc:  # it stays marked: the next sweep retries it
            log.error("video %s: could not delete its expired files: %s", job_id, exc)
            continue
        swept += 1
    return swept


def delete_expiring_content(sessions: SessionFactory, storage: Storage, job_id: str) -> None:
    """The files of a job marked expiring, then the rows that named them (StaleJob: another sweep finished
    it first; StorageError: it stays marked and the next sweep retries)."""
    with sessions() as session:
        keys, folder = expiring_keys(session, job_id)
    if folder is not None:  # a training's dataset and checkpoints
        keys += [stored.key for stored in storage.list(folder)]
    for key in keys:
        storage.delete(key)
    with sessions.begin() as session:
        queue.finish_content_expiry(session, job_id)


def delete_orphans(sessions: SessionFactory, storage: Storage, now: datetime, grace_s: float,
                   limit: int = orphans_max) -> int:
    """Delete stored objects that no row names and that are older than `grace_s` (an upload whose
    transaction never committed: a crash between the two). The grace period outlasts any upload's wait
    for its commit, so an object about to be named is never taken. Returns the objects deleted."""
    cutoff = now - timedelta(seconds=grace_s)
    deleted = 0
    old: list[str] = []
    for stored in storage.list(""):
        if stored.modified_at <= cutoff:
            old.append(stored.key)
        if len(old) == orphan_keys_per_check:
            deleted += _delete_unreferenced(sessions, storage, old, limit - deleted)
            old = []
        if deleted >= limit:
            return deleted
    return deleted + _delete_unreferenced(sessions, storage, old, limit - deleted)


def _delete_unreferenced(sessions: SessionFactory, storage: Storage, keys: list[str], limit: int) -> int:
    with sessions() as session:
        named = referenced_keys(session, keys)
    orphans = [key for key in keys if key not in named][:limit]
    for key in orphans:
        storage.delete(key)
        log.warning("deleted orphan object %s: no database row names it", key)
    return len(orphans)
