"""Events and the outbox: `record_event` writes an event and one delivery row per target in the
caller's transaction, so a webhook exists exactly when the change it reports committed.

Targets are the tenant's enabled endpoints subscribed to the type, and the job's own `webhook_url`.
Every tenant event is kept, targets or not: the event streams (`events_after`, Server-Sent Events) read
the same rows the webhooks are sent from, in the order of their `seq`.

A stream resumes after the last `seq` it sent, so an event must never commit after one with a higher
`seq`: it would be skipped. Events are therefore queued on the transaction and written at its commit,
under the audit head's lock (`audit.hold_head`), which is held until the commit ends: each transaction's
events take their `seq` after every earlier commit's, and commit in that order.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.billing.audit import hold_head
from vidfactory.db import at_commit
from vidfactory.db.models import Job, TenantWebhookSecret, Transfer, WebhookDelivery, WebhookEndpoint, WebhookEvent
from vidfactory.db.types import utcnow
from vidfactory.failures import failure_object
from vidfactory.notify.signing import new_secret

__all__ = [
    "billing_event",
    "ensure_job_secret",
    "event_types",
    "events_after",
    "terminal_video_types",
    "test_event_type",
    "operator_event_types",
    "record_event",
    "queued_events",
    "record_events",
    "record_operator_event",
    "record_test_event",
    "review_data",
    "review_required_event",
    "rotate",
    "secrets_in_force",
    "training_data",
    "training_event",
    "video_event",
    "voucher_event",
]

event_types = (
    "video.queued", "video.in_progress", "video.completed", "video.failed", "video.cancelled",
    "video.review_required",
    "billing.hold_created", "billing.settled", "billing.released", "billing.voucher_granted",
    "training.progress", "training.completed", "training.failed",
)

operator_event_types = ("alert.raised",)
test_event_type = "webhook.test"  # sent on request to one endpoint; no endpoint subscribes to it
terminal_video_types = ("video.completed", "video.failed", "video.cancelled")


def _subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return not endpoint.event_types or event_type in endpoint.event_types


def record_event(session: Session, tenant_id: str, type: str, data: dict[str, Any], *,  # noqa: A002
                 job_id: str | None = None, job_webhook_url: str | None = None) -> WebhookEvent:
    """The event and its outbox rows (none when no webhook listens), in the caller's transaction."""
    [event] = record_events(session, tenant_id, [(type, data)], job_id=job_id, job_webhook_url=job_webhook_url)
    return event


# Every submission runs these: built once, not at every submission.
_enabled_endpoints = select(WebhookEndpoint).where(
    WebhookEndpoint.tenant_id == bindparam("tenant_id"), WebhookEndpoint.status == "enabled",
    WebhookEndpoint.deleted_at.is_(None))
_events_added = insert(WebhookEvent).returning(WebhookEvent.seq, sort_by_parameter_order=True)
_deliveries_added = insert(WebhookDelivery)


def record_events(session: Session, tenant_id: str, events: list[tuple[str, dict[str, Any]]], *,
                  job_id: str | None = None, job_webhook_url: str | None = None) -> list[WebhookEvent]:
    """Several (type, data) events of one tenant, in this order, and their outbox rows: the tenant's
    endpoints are read once for all of them. Written at the transaction's commit: `seq` is None until then."""
    assert all(type in event_types for type, _ in events), f"unknown event type in {events!r}"
    endpoints = list(session.scalars(_enabled_endpoints, {"tenant_id": tenant_id}))
    job_target = [(None, job_webhook_url)] if job_webhook_url else []
    rows, _ = _events_to(session, tenant_id, [
        (type, data, [(e.id, e.url) for e in endpoints if _subscribed(e, type)] + job_target)
        for type, data in events], job_id)
    return rows


def _events_to(session: Session, tenant_id: str | None,
               events: list[tuple[str, dict[str, Any], list[tuple[str | None, str]]]],
               job_id: str | None = None) -> tuple[list[WebhookEvent], list[WebhookDelivery]]:
    """Each (type, data, targets) event, in this order, and one pending delivery per (endpoint id, url)
    target, queued on the transaction (their `seq` is given at its commit)."""
    now = utcnow()
    timestamp = now.isoformat().replace("+00:00", "Z")
    rows = [WebhookEvent(id=f"msg_{uuid.uuid4().hex}", tenant_id=tenant_id, type=type, created_at=now, job_id=job_id,
                         payload={"type": type, "timestamp": timestamp, "data": data}) for type, data, _ in events]
    deliveries = [WebhookDelivery(id=f"whd_{uuid.uuid4().hex}", event_id=event.id, tenant_id=tenant_id,
                                  endpoint_id=endpoint_id, job_id=job_id, url=url, status="pending",
                                  attempts=0, next_attempt_at=now, created_at=now)
                  for event, (_, _, targets) in zip(rows, events) for endpoint_id, url in targets]
    at_commit.queue(session, "events", (rows, deliveries))
    return rows, deliveries


@event.listens_for(Session, "before_commit")
def _write_queued(session: Session) -> None:
    """At the outermost commit: the queued events, then their deliveries, under the audit head's lock. A
    savepoint's commit leaves them queued for the transaction around it. Core inserts: the lock is held
    from here to the end of the commit, so the work under it is kept small."""
    if session.get_nested_transaction() is not None:
        return
    queued = at_commit.take(session, "events")
    if not queued:
        return
    hold_head(session)
    rows = [row for events, _ in queued for row in events]
    seqs = session.scalars(_events_added, [
        {"id": row.id, "tenant_id": row.tenant_id, "type": row.type, "payload": row.payload,
         "created_at": row.created_at, "job_id": row.job_id} for row in rows]).all()
    for row, seq in zip(rows, seqs, strict=True):
        row.seq = seq
    deliveries = [{"id": d.id, "event_id": d.event_id, "tenant_id": d.tenant_id, "endpoint_id": d.endpoint_id,
                   "job_id": d.job_id, "url": d.url, "status": d.status, "attempts": d.attempts,
                   "next_attempt_at": d.next_attempt_at, "created_at": d.created_at}
                  for _, targets in queued for d in targets]
    if deliveries:
        session.execute(_deliveries_added, deliveries)


def record_test_event(session: Session, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook.test` event for this one endpoint, whatever types it subscribes to (its owner asked for
    it), signed and sent like any other; returns its delivery."""
    data = {"object": "webhook_test", "endpoint_id": endpoint.id,
            "message": "A test event: your endpoint receives and verifies vidfactory webhooks."}
    _, [delivery] = _events_to(session, endpoint.tenant_id, [(test_event_type, data, [(endpoint.id, endpoint.url)])])
    return delivery


def events_after(session: Session, tenant_id: str, after_seq: int, *, job_id: str | None = None,
                 limit: int = 100) -> list[WebhookEvent]:
    """A tenant's events (or one of its videos') recorded after `after_seq`, oldest first."""
    assert 1 <= limit <= 1000
    query = (select(WebhookEvent).where(WebhookEvent.tenant_id == tenant_id, WebhookEvent.seq > after_seq)
             .order_by(WebhookEvent.seq).limit(limit))
    if job_id is not None:
        query = query.where(WebhookEvent.job_id == job_id)
    return list(session.scalars(query))


def record_operator_event(session: Session, type: str, data: dict[str, Any]) -> WebhookEvent:  # noqa: A002
    """An event for the operator webhook (tenant None); the dispatcher sends it to the configured URL, or
    dead-letters it when none is configured."""
    assert type in operator_event_types, f"unknown operator event type {type!r}"
    [event], _ = _events_to(session, None, [(type, data, [(None, "")])])
    return event


def video_data(job: Job) -> dict[str, Any]:
    error = failure_object(job.error_type, job.error_message) if job.status == "failed" else None
    return {"id": job.id, "object": "video", "status": job.status, "model": job.model, "progress": job.progress,
            "error": error, "metadata": job.request_metadata,
            "usage": {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens,
                      "total_tokens": job.total_tokens}}


def video_event(session: Session, job: Job, type: str) -> None:  # noqa: A002
    """`job` must hold the state the event reports (refreshed after a compare-and-set update)."""
    assert type == f"video.{job.status}", f"{type} for a {job.status} job"
    record_event(session, job.tenant_id, type, video_data(job), job_id=job.id, job_webhook_url=job.webhook_url)


def training_data(job: Job) -> dict[str, Any]:
    """A style training as its events and its API object show it."""
    training = job.training or {}
    error = failure_object(job.error_type, job.error_message) if job.status == "failed" else None
    return {"id": job.id, "object": "style.training", "status": job.status, "model": job.model,
            "style_id": training.get("style_id"), "step": training.get("step", 0), "steps": job.steps,
            "loss": training.get("loss"), "progress": job.progress, "error": error,
            "usage": {"total_tokens": job.total_tokens}}


def training_event(session: Session, job: Job, type: str) -> None:  # noqa: A002
    """`training.progress` (step, steps, loss), `training.completed` or `training.failed` (a cancelled
    training is failed for its listeners: no style came of it; its status says cancelled)."""
    assert job.job_type == "training", f"{job.id} is not a training"
    record_event(session, job.tenant_id, type, training_data(job), job_id=job.id, job_webhook_url=job.webhook_url)


def review_required_event(session: Session, job: Job) -> None:
    """The job waits for an admin's review (its state stays queued or in_progress); the review says until
    when, and what happens then. The reason stays with the admins."""
    assert job.review_status == "pending", f"video {job.id} is not waiting for review"
    record_event(session, job.tenant_id, "video.review_required", {**video_data(job), "review": review_data(job)},
                 job_id=job.id, job_webhook_url=job.webhook_url)


def review_data(job: Job) -> dict[str, Any] | None:
    """A job's review as its owner sees it: status, what raised it, the deadline and what happens then."""
    if job.review_status is None:
        return None
    due = job.review_due_at
    return {"status": job.review_status, "source": job.review_source,
            "deadline_at": None if due is None else int(due.timestamp()), "on_deadline": job.review_on_due}


def billing_data(job: Job, charged: int | None) -> dict[str, Any]:
    held = job.total_tokens
    return {"object": "billing", f"{job.job_type}_id": job.id, "hold_id": job.hold_id, "held": held,
            "settled": charged, "released": None if charged is None else held - charged}


def billing_event(session: Session, job: Job, type: str, charged: int | None) -> None:  # noqa: A002
    """A hold created (`charged` None), settled (`charged` tokens, the rest released) or released (0)."""
    record_event(session, job.tenant_id, type, billing_data(job, charged), job_id=job.id,
                 job_webhook_url=job.webhook_url)


def queued_events(session: Session, job: Job) -> None:
    """A new video's `video.queued` and `billing.hold_created`, recorded together."""
    assert job.status == "queued", f"{job.id} is {job.status}"
    record_events(session, job.tenant_id, [("video.queued", video_data(job)),
                                           ("billing.hold_created", billing_data(job, None))],
                  job_id=job.id, job_webhook_url=job.webhook_url)


def voucher_event(session: Session, grant: Transfer, job: Job | None = None) -> None:
    """A voucher granted (`job`: the failed job it compensates; None for a grant by hand)."""
    assert grant.kind == "grant", f"not a voucher grant: {grant.kind}"
    data = {"object": "voucher", "id": grant.id, "tokens": grant.amount, "expires_at": grant.expires_at.isoformat(),
            "reason": grant.memo, "video_id": None if job is None else job.id}
    record_event(session, grant.tenant_id, "billing.voucher_granted", data,
                 job_id=None if job is None else job.id, job_webhook_url=None if job is None else job.webhook_url)


def secrets_in_force(row: WebhookEndpoint | TenantWebhookSecret, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    if row.previous_secret and row.previous_secret_expires_at and row.previous_secret_expires_at > now:
        return [row.secret, row.previous_secret]
    return [row.secret]


def rotate(row: WebhookEndpoint | TenantWebhookSecret, overlap_s: int) -> str:
    """A new secret; the old one keeps signing for `overlap_s` so receivers can switch without a gap."""
    assert overlap_s >= 0
    row.previous_secret = row.secret
    row.previous_secret_expires_at = utcnow() + timedelta(seconds=overlap_s)
    row.secret = new_secret()
    return row.secret


def ensure_job_secret(session: Session, tenant_id: str) -> TenantWebhookSecret:
    """The tenant's secret for per-job webhook URLs, created on first need (concurrent creators agree)."""
    row = session.get(TenantWebhookSecret, tenant_id)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = TenantWebhookSecret(tenant_id=tenant_id, secret=new_secret())
            session.add(row)
    except IntegrityError:
        row = session.get(TenantWebhookSecret, tenant_id, populate_existing=True)
    assert row is not None
    return row
