"""/v1/admin/reviews and /v1/admin/alerts: jobs held for an admin's decision, and what the operator
must look at."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from vidfactory.api.deps import AdminDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import timestamp, video_object
from vidfactory.api.schemas import ReviewDecision
from vidfactory.db.models import Alert, Job
from vidfactory.jobs import queue
from vidfactory.notify.alerts import acknowledge_alert, recent_alerts

router = APIRouter(prefix="/v1/admin", tags=["admin"])

page_size_max = 100


def review_object(session, job: Job) -> dict[str, Any]:
    video = video_object(session, job)
    video["tenant_id"] = job.tenant_id
    video["review"] = {**video["review"], "reason": job.review_reason, "reviewed_at": timestamp(job.reviewed_at)}
    video["qc"] = job.qc_report  # scores and verdict of the quality checks: admins only
    return video


def alert_object(alert: Alert) -> dict[str, Any]:
    return {"id": alert.id, "object": "alert", "kind": alert.kind, "message": alert.message,
            "tenant_id": alert.tenant_id, "video_id": alert.job_id, "created_at": timestamp(alert.created_at),
            "acknowledged_at": None if alert.acknowledged_at is None else timestamp(alert.acknowledged_at),
            "acknowledged_by": alert.acknowledged_by}


@router.get("/reviews")
def list_reviews(session: SessionDep, _admin: AdminDep,
                 limit: Annotated[int, Query(ge=1, le=page_size_max)] = 20) -> dict[str, Any]:
    """Jobs waiting for a decision, oldest first."""
    return {"object": "list", "data": [review_object(session, job) for job in queue.pending_reviews(session, limit)]}


def _pending_job(session, video_id: str) -> Job:
    checked_id("video", video_id)
    job = queue.held_for_review(session, video_id)
    if job is None and session.get(Job, video_id) is None:
        raise not_found("video", video_id)
    if job is None:
        raise ApiError(409, "invalid_state", f"video {video_id} is not waiting for review")
    return job


@router.post("/reviews/{video_id}/approve")
def approve_review(video_id: str, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """A held prompt becomes claimable; a held clip is delivered and its hold settled."""
    with ctx.sessions.begin() as session:
        _pending_job(session, video_id)
        queue.approve_review(session, video_id, actor="admin")
    with ctx.sessions() as session:
        return review_object(session, session.get(Job, video_id))


@router.post("/reviews/{video_id}/reject")
def reject_review(video_id: str, body: ReviewDecision, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """The job fails with `content_rejected` and its hold is voided: rejected content is never charged."""
    with ctx.sessions.begin() as session:
        _pending_job(session, video_id)
        queue.reject_review(session, video_id, body.reason, actor="admin")
    with ctx.sessions() as session:
        return review_object(session, session.get(Job, video_id))


@router.get("/alerts")
def list_alerts(session: SessionDep, _admin: AdminDep,
                limit: Annotated[int, Query(ge=1, le=page_size_max)] = 20) -> dict[str, Any]:
    """Newest first."""
    return {"object": "list", "data": [alert_object(a) for a in recent_alerts(session, limit)]}


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(alert_id: str, ctx: ContextDep, _admin: AdminDep) -> dict[str, Any]:
    """Mark the alert seen (audited; acknowledging again keeps the first acknowledgement)."""
    checked_id("alert", alert_id)
    with ctx.sessions.begin() as session:
        alert = acknowledge_alert(session, alert_id, actor="admin")
        if alert is None:
            raise not_found("alert", alert_id)
        return alert_object(alert)
