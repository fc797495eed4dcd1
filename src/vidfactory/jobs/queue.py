"""Every SQL statement that changes a job lives here, each guarded by the state it expects.

A state change is one compare-and-set UPDATE (`WHERE id = ? AND status = ?`, plus the lease owner for
worker-side changes); when it matches no row the caller is stale and `StaleJob` is raised. Changes
that end a job resolve its hold in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from vidfactory.billing import audit, ledger, pricebooks, vouchers
from vidfactory.billing.pricebook import cache_hit_charge
from vidfactory.cache import index as cache_index
from vidfactory.db.models import Asset, CacheEntry, Job, Plan, RegisteredWorker, Style, Tenant, Transfer
from vidfactory.db.types import utcnow
from vidfactory.failures import ErrorType, caller_caused, failure_types
from vidfactory.notify.alerts import raise_alert
from vidfactory.notify.events import (billing_event, review_required_event, training_event, video_event,
                                      voucher_event)
from vidfactory.observability.redact import redact_paths

__all__ = [
    "AssetRecord",
    "CancelOutcome",
    "Residency",
    "Review",
    "StaleJob",
    "approve_review",
    "decide_overdue_review",
    "assign_watermark",
    "claim",
    "complete",
    "content_due",
    "content_expiring",
    "complete_cache_hit",
    "complete_training",
    "depth",
    "delivered_video_key",
    "expired_leases",
    "finish_content_expiry",
    "mark_content_expiring",
    "finished_counts",
    "finished_since",
    "fail",
    "finish_cancelled",
    "forget_cache_hit",
    "hand_back",
    "heartbeat",
    "hold_for_review",
    "oldest_queued",
    "overdue_reviews",
    "pending_reviews",
    "held_for_review",
    "QueuePlace",
    "queue_place",
    "record_qc",
    "regenerate_for_qc",
    "record_engine_metadata",
    "record_remote_task",
    "record_run",
    "reject_review",
    "job_types",
    "report_progress",
    "report_training_progress",
    "request_cancel",
    "requeue",
    "require_review",
    "review_alert_kind",
    "review_deadline_actor",
    "serve_from_cache",
    "should_stop",
    "stop_reason",
    "withdraw_content",
    "worker_demand_sql",
]

terminal_states = ("completed", "failed", "cancelled")
job_types = ("video", "training")
error_message_chars_max = 2000
review_reason_chars_max = 500
review_sources = ("prompt", "qc", "output_safety")
review_deadline_actions = ("approve", "refund")
review_alert_kind = "review_required"
model_id_sql_pattern = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")  # a model id safe as an SQL literal
review_deadline_actor = "review_deadline"  # the audit log's actor for what a deadline decided
run_time_sample_jobs = 20  # the recent completed runs of a model that estimate how long one more takes


class StaleJob(Exception):
    """The job is not in the state (or lease) the caller expected: someone else moved it."""


@dataclass(frozen=True)
class Review:
    """Why a job waits for an admin: `source` is what raised it, `reason` is for admins only."""

    source: str
    reason: str

    def __post_init__(self) -> None:
        assert self.source in review_sources, f"unknown review source {self.source!r}"


@dataclass(frozen=True)
class AssetRecord:
    variant: str
    storage_key: str
    content_type: str
    size_bytes: int
    sha256: str
    md5: str | None = None


def _transition(session: Session, job_id: str, *, expected: tuple[str, ...], owner: str | None,
                values: dict[str, Any], review: str | None = None) -> None:
    """`review`: the review status the job must have too ("pending" for admin decisions). A change that
    ends the job (it sets `completed_at`) also sets when its stored files expire."""
    if "completed_at" in values:
        values = {**values, "expires_at": values["completed_at"] + _retention(session, job_id)}
    conditions = [Job.id == job_id, Job.status.in_(expected)]
    if owner is not None:
        conditions.append(Job.lease_owner == owner)
    if review is not None:
        conditions.append(Job.review_status == review)
    result = session.execute(update(Job).where(*conditions).values(**values).execution_options(
        synchronize_session=False))
    if result.rowcount != 1:
            raise StaleJob(f"job {job_id} is not {'/'.join(expected)}"
                       + (f" under lease {owner}" if owner else "")
                       + (f" with review {review}" if review else ""))


def _retention(session: Session, job_id: str) -> timedelta:
    """How long the job's files are kept: its tenant's plan's retention now, as the job ends."""
    days = session.scalars(select(Plan.retention_days).join(Tenant, Tenant.plan_id == Plan.id)
                           .join(Job, Job.tenant_id == Tenant.id).where(Job.id == job_id)).one()
    return timedelta(days=days)


def _announce(session: Session, job_id: str, video_type: str, billing: tuple[str, Any] | None = None) -> None:
    """Webhook events for a change just made, in its transaction (the outbox): the video's new state and,
    when its hold moved, the billing event with the transfer. A training announces how it ended (its
    progress has its own event), and one that failed or was cancelled leaves its style failed."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    if job.job_type == "training":
        _training_changed(session, job)
    else:
        video_event(session, job, video_type)
    if billing is not None:
        billing_event(session, job, *billing)


def _training_changed(session: Session, job: Job) -> None:
    if job.status == "completed":
        training_event(session, job, "training.completed")
    elif job.status in ("failed", "cancelled"):
        session.execute(update(Style).where(Style.id == job.training["style_id"], Style.status == "training")
                        .values(status="failed", updated_at=utcnow()).execution_options(synchronize_session=False))
        training_event(session, job, "training.failed")


@dataclass(frozen=True)
class Residency:
    """What a claiming worker can run and holds: only jobs that fit `memory_bytes` are given to it, jobs for
    `held_models` come first, and another model's job jumps ahead once it has waited `switch_after_s`."""

    memory_bytes: int | None = None  # None: no memory gating (a worker that cannot tell)
    held_models: tuple[str, ...] = ()
    switch_after_s: float = 300.0

    def __post_init__(self) -> None:
        assert self.memory_bytes is None or self.memory_bytes >= 0
        assert self.switch_after_s >= 0


def claim(session: Session, *, worker_id: str, models: list[str], lease_s: float, now: datetime,
          residency: Residency = Residency(), aging_s: float = 600.0,
          types: tuple[str, ...] = job_types) -> Job | None:
    """Take the next job this worker fits, skipping tenants at their concurrency limit:
    1. a job queued at least `aging_s` ago, oldest first, whatever its priority or model (aging: a job
       that has waited that long is never overtaken by one queued after it, so paid traffic cannot
       starve a free plan's job);
    2. otherwise the model it holds first (unless another model's job has waited past the switch limit),
       then highest plan priority, then oldest.
    Each tier is its own index-ordered lookup (`ix_jobs_queued_created`, `ix_jobs_claim`), the first that
    finds a job wins. One statement; `SKIP LOCKED` lets PostgreSQL workers claim in parallel (SQLite
    serialises writers). `types`: the job types this worker runs (videos, style trainings)."""
    assert aging_s > 0, "aging_s must be positive"
    running = aliased(Job)
    running_for_tenant = (select(func.count()).select_from(running)
                          .where(running.tenant_id == Job.tenant_id, running.status == "in_progress")
                          .scalar_subquery())
    conditions = [Job.status == "queued", Job.run_after <= now, Job.model.in_(models), Job.job_type.in_(types),
                  or_(Job.review_status.is_(None), Job.review_status != "pending"),
                  running_for_tenant < Job.concurrent_jobs_max]
    if residency.memory_bytes is not None:
        conditions.append(Job.memory_bytes_min <= residency.memory_bytes)
    by_priority = [Job.priority.desc(), Job.created_at, Job.id]
    tiers = [([Job.created_at <= now - timedelta(seconds=aging_s)], [Job.created_at, Job.id])]
    if residency.held_models:
        waited_long = Job.created_at <= now - timedelta(seconds=residency.switch_after_s)
        tiers.append(([or_(Job.model.in_(residency.held_models), waited_long)], by_priority))
    tiers.append(([], by_priority))
    candidates = [select(Job.id).where(*conditions, *extra).order_by(*order).limit(1)
                  .with_for_update(skip_locked=True).scalar_subquery() for extra, order in tiers]
    statement = (update(Job)
                 .where(Job.id == func.coalesce(*candidates), Job.status == "queued")
                 .values(status="in_progress", lease_owner=worker_id,
                         lease_expires_at=now + timedelta(seconds=lease_s), attempts=Job.attempts + 1,
                         started_at=func.coalesce(Job.started_at, now), progress=0, model_load_s=None)
                 .returning(Job.id)
                 .execution_options(synchronize_session=False))
    job_id = session.scalars(statement).one_or_none()
    if job_id is None:
        return None
    _announce(session, job_id, "video.in_progress")
    return session.get(Job, job_id)


def record_run(session: Session, job_id: str, worker_id: str, *, engine_settings: dict[str, Any],
               model_load_s: float | None) -> None:
    """What this attempt ran with (memory mode, attention, compile, FP8, step cache) and the model load it
    paid; the submission's own entries (step_cache_allowed) are kept."""
    current = session.scalars(select(Job.engine_settings).where(Job.id == job_id)).one() or {}
    _transition(session, job_id, expected=("in_progress",), owner=worker_id, values={
        "engine_settings": {**current, **engine_settings}, "model_load_s": model_load_s})


def heartbeat(session: Session, job_id: str, worker_id: str, *, lease_s: float, now: datetime) -> None:
    _transition(session, job_id, expected=("in_progress",), owner=worker_id,
                values={"lease_expires_at": now + timedelta(seconds=lease_s)})


def report_progress(session: Session, job_id: str, worker_id: str, progress: int) -> None:
    assert 0 <= progress <= 100
    _transition(session, job_id, expected=("in_progress",), owner=worker_id, values={"progress": progress})


def report_training_progress(session: Session, job_id: str, worker_id: str, *, step: int, loss: float,
                             announce: bool) -> None:
    """A training's step and loss on the job (its progress in percent), and `training.progress` when
    `announce` (the caller spaces them: one event per step would flood the outbox)."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None and job.job_type == "training" and 0 < step <= job.steps
    _transition(session, job_id, expected=("in_progress",), owner=worker_id, values={
        "progress": min(99, step * 100 // job.steps), "training": {**job.training, "step": step, "loss": loss}})
    if announce:
        training_event(session, session.get(Job, job_id, populate_existing=True), "training.progress")


def complete_training(session: Session, job: Job, worker_id: str, assets: list[AssetRecord],
                      style_values: dict[str, Any]) -> None:
    """The trained style ready (`style_values`: its adapter file and provenance), the preview clip
    recorded, the job completed and its hold posted: one transaction (the caller's)."""
    _transition(session, job.id, expected=("in_progress",), owner=worker_id, values={
        "status": "completed", "progress": 100, "completed_at": utcnow(), "lease_owner": None,
        "lease_expires_at": None})
    styled = session.execute(update(Style).where(Style.id == job.training["style_id"], Style.status == "training")
                             .values(status="ready", updated_at=utcnow(), **style_values)
                             .execution_options(synchronize_session=False))
    if styled.rowcount != 1:
        raise StaleJob(f"the style of training {job.id} was deleted while it trained")
    _record_assets(session, job, assets)
    ledger.settle(session, job.hold_leg_ids, job.total_tokens, memo=f"settle {job.id}: {job.steps} training steps")
    _announce(session, job.id, "training.completed", ("billing.settled", job.total_tokens))


def stop_reason(session: Session, job_id: str, worker_id: str) -> str | None:
    """Why this worker should stop the job, or None: "cancelled" (asked to, or the job ended meanwhile),
    "taken_over" (it is queued again or another worker's: that worker carries on with it)."""
    row = session.execute(select(Job.status, Job.lease_owner, Job.cancel_requested)
                          .where(Job.id == job_id)).one()
    if row.status == "in_progress" and row.lease_owner == worker_id:
        return "cancelled" if row.cancel_requested else None
    return "taken_over" if row.status in ("queued", "in_progress") else "cancelled"


def should_stop(session: Session, job_id: str, worker_id: str) -> bool:
    """True when the job was cancelled or this worker no longer holds its lease."""
    return stop_reason(session, job_id, worker_id) is not None


def _record_assets(session: Session, job: Job, assets: list[AssetRecord]) -> None:
    for index, asset in enumerate(assets):
        session.add(Asset(id=f"{job.id}_{index}", job_id=job.id, tenant_id=job.tenant_id, variant=asset.variant,
                          storage_key=asset.storage_key, content_type=asset.content_type,
                          size_bytes=asset.size_bytes, sha256=asset.sha256, md5=asset.md5))


def complete(session: Session, job: Job, worker_id: str, assets: list[AssetRecord], charge: int,
             memo: str | None = None) -> None:
    """Job completed, assets recorded, the hold posted and the clip indexed for the result cache: one
    transaction (the caller's)."""
    _transition(session, job.id, expected=("in_progress",), owner=worker_id, values={
        "status": "completed", "progress": 100, "completed_at": utcnow(), "lease_owner": None,
        "lease_expires_at": None})
    _record_assets(session, job, assets)
    ledger.settle(session, job.hold_leg_ids, charge, memo=memo or f"settle {job.id}")
    cache_index.index_job(session, job)
    _announce(session, job.id, "video.completed", ("billing.settled", charge))


def serve_from_cache(session: Session, job: Job, source_id: str, score: float) -> None:
    """A cache hit, in the submitting transaction: the queued job will deliver its own copy of the source's
    clip, re-labelled by a worker (no engine, no denoising), instead of generating one. It takes the
    source's seed: the seed that made the frames it delivers."""
    assert 0.0 < score <= 1.0, f"cache score out of range: {score}"
    source_seed = session.scalars(select(Job.seed).where(Job.id == source_id, Job.status == "completed")).one()
    _transition(session, job.id, expected=("queued",), owner=None, values={
        "cache_hit_job_id": source_id, "cache_hit_score": score, "seed": source_seed})


def complete_cache_hit(session: Session, job: Job, worker_id: str, assets: list[AssetRecord]) -> int:
    """A re-labelled cache hit delivered: completed like any job, its hold posted at the cache rate of the
    price book it pinned (the rest released). Returns the tokens posted."""
    assert job.cache_hit_job_id is not None, f"job {job.id} is not a cache hit"
    charge = cache_hit_charge(pricebooks.get(session, job.price_book_version), job.total_tokens)
    complete(session, job, worker_id, assets, charge, memo=f"settle {job.id}: cache hit on {job.cache_hit_job_id}")
    return charge


def delivered_video_key(session: Session, job_id: str) -> str | None:
    """Where a delivered (completed, not deleted) job's video is stored; None when it is not."""
    return session.scalar(select(Asset.storage_key).join(Job, Job.id == Asset.job_id).where(
        Job.id == job_id, Job.status == "completed", Job.deleted_at.is_(None), Job.content_status.is_(None),
        Asset.variant == "video"))


def forget_cache_hit(session: Session, job_id: str, *, owner: str) -> None:
    """The source clip went (deleted) before it was re-labelled: the job goes back to the queue to be
    generated like a miss, at its quoted price (its hold already covers it), without spending an attempt."""
    _transition(session, job_id, expected=("in_progress",), owner=owner, values={
        "status": "queued", "cache_hit_job_id": None, "cache_hit_score": None, "attempts": Job.attempts - 1,
        "run_after": utcnow(), "lease_owner": None, "lease_expires_at": None, "progress": 0})


def hold_for_review(session: Session, job: Job, worker_id: str, assets: list[AssetRecord],
                    review: Review) -> None:
    """A finished clip waits for an admin: stored but not delivered, its hold still pending. The lease is
    released (no worker owns it any more), so the reaper leaves it alone."""
    _transition(session, job.id, expected=("in_progress",), owner=worker_id, values={
        "progress": 100, "lease_owner": None, "lease_expires_at": None, "review_status": "pending",
        "review_source": review.source, "review_reason": review.reason[:review_reason_chars_max]})
    _record_assets(session, job, assets)
    require_review(session, job.id)


def require_review(session: Session, job_id: str) -> None:
    """A job has just been held for review (its prompt at submission, or its finished clip): its deadline
    and the action then, from the tenant's plan; the `video.review_required` event; an operator alert. All
    in the caller's transaction, so a poller, a webhook receiver and the operator learn of it together."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None and job.review_status == "pending", f"video {job_id} is not held for review"
    deadline_s, action = session.execute(
        select(Plan.review_deadline_s, Plan.review_deadline_action).join(Tenant, Tenant.plan_id == Plan.id)
        .where(Tenant.id == job.tenant_id)).one()
    assert deadline_s > 0 and action in review_deadline_actions, f"plan review deadline {deadline_s} {action}"
    due_at = utcnow() + timedelta(seconds=deadline_s)
    _transition(session, job_id, expected=(job.status,), owner=None, review="pending",
                values={"review_due_at": due_at, "review_on_due": action})
    job = session.get(Job, job_id, populate_existing=True)
    review_required_event(session, job)
    raise_alert(session, review_alert_kind, f"video {job_id} waits for review ({job.review_source}) until "
                f"{due_at.isoformat(timespec='seconds')}, then {action}: {job.review_reason}",
                tenant_id=job.tenant_id, job_id=job_id)


def overdue_reviews(session: Session, now: datetime, limit: int = 100) -> list[str]:
    """Jobs still held for review past their deadline, the longest overdue first."""
    return list(session.scalars(select(Job.id).where(Job.review_status == "pending", Job.review_due_at <= now)
                                .order_by(Job.review_due_at, Job.id).limit(limit)))


def decide_overdue_review(session: Session, job_id: str, now: datetime) -> str:
    """No admin decided before the deadline: the action the plan named when the review started applies,
    audited as the deadline's. "approve" is `approve_review`; "refund" fails the job (`review_expired`)
    and voids its hold. Returns the job's status afterwards; StaleJob when it is no longer overdue."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None, f"no job {job_id}"
    if job.review_status != "pending" or job.review_due_at is None or job.review_due_at > now:
        raise StaleJob(f"video {job_id} has no review past its deadline")
    if job.review_on_due == "approve":
        return approve_review(session, job_id, actor=review_deadline_actor)
    assert job.review_on_due == "refund", f"unknown review deadline action {job.review_on_due!r}"
    _transition(session, job_id, expected=("queued", "in_progress"), owner=None, review="pending",
                values={"review_status": "rejected", "reviewed_at": utcnow()})
    fail(session, job_id, expected=("queued", "in_progress"), owner=None, error_type=ErrorType.review_expired,
         message="no administrator reviewed it before the review deadline; nothing is charged")
    audit.append(session, "review.expired", f"video:{job_id}", {"tenant_id": job.tenant_id,
                                                                "source": job.review_source}, review_deadline_actor)
    return "failed"


def approve_review(session: Session, job_id: str, actor: str = audit.system_actor) -> str:
    """A held prompt may run (queued stays queued, now claimable); a held clip is delivered and settled.
    Returns the job's status afterwards. The decision is audited."""
    job = session.get(Job, job_id)
    assert job is not None, f"no job {job_id}"
    _transition(session, job_id, expected=("queued", "in_progress"), owner=None, review="pending",
                values={"review_status": "approved", "reviewed_at": utcnow()})
    status = "queued"
    if job.status == "in_progress":
        _transition(session, job_id, expected=("in_progress",), owner=None, values={
            "status": "completed", "completed_at": utcnow()})
        ledger.settle(session, job.hold_leg_ids, job.total_tokens, memo=f"settle {job_id} after review")
        cache_index.index_job(session, job)
        _announce(session, job_id, "video.completed", ("billing.settled", job.total_tokens))
        status = "completed"
    # After the ledger: the audit head is always locked after the tenant's accounts (ledger.py's order).
    audit.append(session, "review.approved", f"video:{job_id}", {"tenant_id": job.tenant_id,
                                                                 "source": job.review_source}, actor)
    return status


def reject_review(session: Session, job_id: str, note: str, actor: str = audit.system_actor) -> None:
    """Rejected content is never delivered and never charged. The decision is audited."""
    _transition(session, job_id, expected=("queued", "in_progress"), owner=None, review="pending",
                values={"review_status": "rejected", "reviewed_at": utcnow()})
    fail(session, job_id, expected=("queued", "in_progress"), owner=None, error_type=ErrorType.content_rejected,
         message=note or "rejected by review")
    audit.append(session, "review.rejected", f"video:{job_id}", {"note": note[:review_reason_chars_max]}, actor)


def held_for_review(session: Session, job_id: str) -> Job | None:
    """The job when it waits for a review decision (any tenant's: reviewers decide for all), else None."""
    job = session.get(Job, job_id)
    return job if job is not None and job.review_status == "pending" else None


def pending_reviews(session: Session, limit: int) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.review_status == "pending")
                                .order_by(Job.created_at, Job.id).limit(limit)))


def _shown_message(message: str) -> str:
    """A failure as its tenant reads it (video object, webhooks): no server paths; the worker's log has all."""
    return redact_paths(message)[:error_message_chars_max]


def fail(session: Session, job_id: str, *, expected: tuple[str, ...], owner: str | None, error_type: str,
         message: str) -> Transfer | None:
    """Job failed and its hold voided: a failure never costs the tenant. Where the job's price book
    compensates `error_type`, a voucher is granted too; it is returned (None otherwise)."""
    assert error_type in failure_types, f"{error_type!r} is not an error type (vidfactory.failures)"
    job = session.get(Job, job_id)
    assert job is not None, f"no job {job_id}"
    _transition(session, job_id, expected=expected, owner=owner, values={
        "status": "failed", "error_type": error_type, "error_message": _shown_message(message),
        "completed_at": utcnow(), "lease_owner": None, "lease_expires_at": None})
    ledger.void_all(session, job.hold_leg_ids, memo=f"refund {job_id}: {error_type}")
    _announce(session, job_id, "video.failed", ("billing.released", 0))
    voucher = vouchers.compensate(session, job, error_type)
    if voucher is not None:
        voucher_event(session, voucher, job)
    return voucher


def requeue(session: Session, job_id: str, *, owner: str | None, run_after: datetime, error_type: str,
            message: str, memory_mode: str | None = None) -> None:
    """Back to the queue for another attempt; the hold stays. `memory_mode`: the mode the next attempt must
    use at least (an out-of-memory retry)."""
    values = {"status": "queued", "run_after": run_after, "lease_owner": None, "lease_expires_at": None,
              "progress": 0, "error_type": error_type, "error_message": _shown_message(message)}
    if memory_mode is not None:
        values["memory_mode"] = memory_mode
    _transition(session, job_id, expected=("in_progress",), owner=owner, values=values)


def assign_watermark(session: Session, job_id: str, worker_id: str, watermark_id: str) -> None:
    """The payload the clip's pixels will carry; unique, so a collision fails here (IntegrityError) before
    any frame is marked, and the caller draws another."""
    _transition(session, job_id, expected=("in_progress",), owner=worker_id,
                values={"watermark_id": watermark_id})


def record_qc(session: Session, job_id: str, worker_id: str, report: dict[str, Any]) -> None:
    _transition(session, job_id, expected=("in_progress",), owner=worker_id, values={"qc_report": report})


def regenerate_for_qc(session: Session, job_id: str, *, owner: str, seed: int, report: dict[str, Any],
                      run_after: datetime) -> None:
    """A clip that failed its quality checks goes back to the queue once, with a new seed; the hold stays.
    The failed report is kept on the job: it is what marks the one regeneration as spent. The remote task
    (hosted engines) is forgotten: it made the failed clip, the new seed needs a new one."""
    _transition(session, job_id, expected=("in_progress",), owner=owner, values={
        "status": "queued", "seed": seed, "qc_report": report, "run_after": run_after, "lease_owner": None,
        "lease_expires_at": None, "progress": 0, "engine_metadata": None})


def hand_back(session: Session, job_id: str, *, owner: str, error_type: str, message: str) -> None:
    """Back to the queue as if never claimed, for any worker to take at once: the attempt is given back
    and the hold stays. For failures that say nothing about the job: the engine's circuit breaker is open,
    the worker is stopping (SIGTERM, scale-down), the database was lost under it. Only the lease owner of
    a running job may (a compare-and-set), so a hand-back racing the reaper or a finish happens once."""
    assert error_type in failure_types, f"{error_type!r} is not an error type (vidfactory.failures)"
    _transition(session, job_id, expected=("in_progress",), owner=owner, values={
        "status": "queued", "attempts": Job.attempts - 1, "run_after": utcnow(), "lease_owner": None,
        "lease_expires_at": None, "progress": 0, "error_type": error_type,
        "error_message": _shown_message(message)})


def record_remote_task(session: Session, job_id: str, owner: str, *, engine: str, task_id: str) -> None:
    """The remote task this attempt just created, recorded before it is waited on, so that a later attempt
    resumes it instead of paying for another. Replaces what an earlier attempt's task left: only the lease
    holder may, so a stale worker's task never displaces the current owner's."""
    assert engine and task_id, "a remote task needs its engine and id"
    _transition(session, job_id, expected=("in_progress",), owner=owner,
                values={"engine_metadata": {"engine": engine, "task_id": task_id}})


def record_engine_metadata(session: Session, job_id: str, owner: str, metadata: dict[str, Any]) -> None:
    """What the engine reports about the run (hosted: remote task id, actual prompt, usage)."""
    _transition(session, job_id, expected=("in_progress",), owner=owner, values={"engine_metadata": metadata})


def finish_cancelled(session: Session, job_id: str, worker_id: str) -> None:
    job = session.get(Job, job_id)
    assert job is not None, f"no job {job_id}"
    _transition(session, job_id, expected=("in_progress",), owner=worker_id, values={
        "status": "cancelled", "completed_at": utcnow(), "lease_owner": None, "lease_expires_at": None})
    ledger.void_all(session, job.hold_leg_ids, memo=f"cancel {job_id}")
    _announce(session, job_id, "video.cancelled", ("billing.released", 0))


@dataclass(frozen=True)
class CancelOutcome:
    status: str  # the job's status after the request
    signalled: bool  # a running job was asked to stop at its next step


def request_cancel(session: Session, job: Job) -> CancelOutcome:
    """Queued: cancelled and voided now. Running: flagged; its worker stops at the next step."""
    if job.status == "queued":
        _transition(session, job.id, expected=("queued",), owner=None,
                    values={"status": "cancelled", "completed_at": utcnow(), "cancel_requested": True})
        ledger.void_all(session, job.hold_leg_ids, memo=f"cancel {job.id}")
        _announce(session, job.id, "video.cancelled", ("billing.released", 0))
        return CancelOutcome(status="cancelled", signalled=False)
    if job.status == "in_progress" and job.review_status == "pending":
        # Waiting for review: no worker holds it, so the cancel is final now.
        _transition(session, job.id, expected=("in_progress",), owner=None, review="pending",
                    values={"status": "cancelled", "completed_at": utcnow(), "cancel_requested": True})
        ledger.void_all(session, job.hold_leg_ids, memo=f"cancel {job.id}")
        _announce(session, job.id, "video.cancelled", ("billing.released", 0))
        return CancelOutcome(status="cancelled", signalled=False)
    if job.status == "in_progress":
        _transition(session, job.id, expected=("in_progress",), owner=None, values={"cancel_requested": True})
        return CancelOutcome(status="in_progress", signalled=True)
    raise StaleJob(f"video {job.id} is already {job.status}")




def finished_since(session: Session, since: datetime) -> tuple[int, int]:
    """(jobs failed through no fault of their input, jobs completed or failed) since `since`."""
    platform_failure = and_(Job.status == "failed", Job.error_type.not_in(caller_caused))
    failed, finished = session.execute(
        select(func.count().filter(platform_failure), func.count())
        .where(Job.status.in_(("completed", "failed")), Job.completed_at >= since)).one()
    return int(failed or 0), int(finished or 0)


def depth(session: Session) -> list[tuple[str, int, str, int]]:
    """(model, priority, status, jobs) of the unfinished jobs: the queue gauges and the autoscaler's
    measure. A range of `ix_jobs_claim` (status first); finished jobs are never read."""
    rows = session.execute(select(Job.model, Job.priority, Job.status, func.count())
                           .where(Job.status.in_(("queued", "in_progress")))
                           .group_by(Job.model, Job.priority, Job.status))
    return [(model, int(priority), status, int(jobs)) for model, priority, status, jobs in rows]


def oldest_queued(session: Session) -> dict[str, datetime]:
    """When the oldest job still waiting for a worker was submitted, per model. Jobs held for an admin's
    review wait for a person, not a worker, and are left out (the review deadline bounds them)."""
    rows = session.execute(select(Job.model, func.min(Job.created_at))
                           .where(Job.status == "queued",
                                  or_(Job.review_status.is_(None), Job.review_status != "pending"))
                           .group_by(Job.model))
    return {model: _aware(created) for model, created in rows if created is not None}


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands: `position` 1 is the next one a worker of its model claims; the estimate
    (seconds until it starts) is None until a run of its model has completed to learn from."""

    position: int
    estimated_start_s: float | None


def queue_place(session: Session, job: Job, now: datetime) -> QueuePlace | None:
    """The claim order's view of a queued job (None otherwise, or while it waits for a review): the claimable
    jobs of its model ahead of it by priority then age (the order `claim` takes outside aging), and an
    estimate from the model's recent run times shared across the workers that serve it."""
    if job.status != "queued" or job.review_status == "pending":
        return None
    mark, ahead_by_age = (job.created_at, job.id), tuple_(Job.created_at, Job.id)
    ahead = session.scalar(select(func.count()).select_from(Job).where(
        Job.status == "queued", Job.model == job.model, Job.id != job.id,
        or_(Job.review_status.is_(None), Job.review_status != "pending"),
        or_(Job.priority > job.priority, and_(Job.priority == job.priority, ahead_by_age < tuple_(*mark)))))
    position = int(ahead or 0) + 1
    runs = session.execute(select(Job.started_at, Job.completed_at).where(
        Job.status == "completed", Job.model == job.model, Job.started_at.is_not(None), Job.cache_hit_job_id.is_(None))
        .order_by(Job.completed_at.desc()).limit(run_time_sample_jobs)).all()
    if not runs:
        return QueuePlace(position, None)
    run_s = sum(max(0.0, (_aware(done) - _aware(start)).total_seconds()) for start, done in runs) / len(runs)
    serving = sum(1 for models in session.scalars(select(RegisteredWorker.models_served)) if job.model in models)
    waiting_s = max(0.0, (_aware(job.run_after) - now).total_seconds()) if job.run_after else 0.0
    return QueuePlace(position, max(waiting_s, position * run_s / max(1, serving)))


def _aware(value: datetime | str) -> datetime:
    """An aggregate bypasses the column type: SQLite returns min(created_at) as text, without a zone."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def finished_counts(session: Session) -> list[tuple[str, str, int]]:
    """(model, status, jobs) of every job that ended (completed, failed, cancelled), ever."""
    rows = session.execute(select(Job.model, Job.status, func.count())
                           .where(Job.status.in_(terminal_states)).group_by(Job.model, Job.status))
    return [(model, status, int(jobs)) for model, status, jobs in rows]


def expired_leases(session: Session, now: datetime, limit: int = 100) -> list[Job]:
    return list(session.scalars(
        select(Job).where(Job.status == "in_progress", Job.lease_expires_at < now)
        .order_by(Job.lease_expires_at).limit(limit)))


def worker_demand_sql(models: list[str]) -> str:
    """The jobs a class of workers serving `models` has to run: queued and running, less those waiting for
    an admin's review (no worker can take them). The autoscaler's query (a KEDA PostgreSQL trigger in
    deploy/k8s), so a literal statement: KEDA sends it as text, with no parameters. Zero means the class
    may sleep."""
    assert models and all(model_id_sql_pattern.match(m) for m in models), f"model ids unsafe in SQL: {models}"
    listed = ", ".join(f"'{m}'" for m in sorted(set(models)))
    return ("SELECT count(*) FROM jobs WHERE status IN ('queued', 'in_progress') "
            f"AND model IN ({listed}) AND (review_status IS NULL OR review_status <> 'pending')")


def content_due(session: Session, now: datetime, limit: int) -> list[str]:
    """Ended jobs whose files are still kept past their expiry, the longest expired first."""
    return list(session.scalars(select(Job.id).where(Job.content_status.is_(None), Job.expires_at <= now)
                                .order_by(Job.expires_at, Job.id).limit(limit)))


def content_expiring(session: Session, limit: int) -> list[str]:
    """Jobs a sweep marked and did not finish (it stopped between deleting files and forgetting them)."""
    return list(session.scalars(select(Job.id).where(Job.content_status == "expiring")
                                .order_by(Job.expires_at, Job.id).limit(limit)))


def mark_content_expiring(session: Session, job_id: str, now: datetime) -> None:
    """The first step of expiring a job's content, before any file is deleted: from here its content
    answers 410 and the result cache no longer serves it. StaleJob when another sweep marked it first."""
    result = session.execute(update(Job).where(
        Job.id == job_id, Job.content_status.is_(None), Job.expires_at <= now).values(content_status="expiring")
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise StaleJob(f"video {job_id} is not due to expire")
    session.execute(delete(CacheEntry).where(CacheEntry.job_id == job_id))


def withdraw_content(session: Session, job_id: str) -> bool:
    """`mark_content_expiring` before the job's expiry: its content goes now (a trained style deleted takes
    its training's dataset, checkpoints and preview with it). False when its content is already going or
    gone (a sweep finishes what it started)."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.content_status.is_(None))
                             .values(content_status="expiring").execution_options(synchronize_session=False))
    session.execute(delete(CacheEntry).where(CacheEntry.job_id == job_id))
    return result.rowcount == 1


def finish_content_expiry(session: Session, job_id: str) -> None:
    """The last step, once its files are deleted: the rows that named them go. StaleJob when another
    sweep finished it first."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.content_status == "expiring")
                             .values(content_status="expired", reference_key=None)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise StaleJob(f"video {job_id} is not expiring")
    session.execute(delete(Asset).where(Asset.job_id == job_id))
