"""A tenant's videos as the API and the console read and keep them: one by id, a page in creation order, a
stored file, deleting one, rating one. Every query is scoped by the tenant: another tenant's video is
simply not found."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, func, select, tuple_
from sqlalchemy.orm import Session

from vidfactory.db.models import Asset, Feedback, Job
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue

__all__ = ["VideoRunning", "delete_video", "feedback_counts", "find_video", "record_feedback", "video_asset",
           "videos_page"]


class VideoRunning(Exception):
    """A running video is cancelled first, then deleted."""


# Every poll of a video runs one of these: built once, not at every request.
_video = select(Job).where(Job.id == bindparam("video_id"), Job.tenant_id == bindparam("tenant_id"),
                           Job.job_type == "video")
_undeleted_video = _video.where(Job.deleted_at.is_(None))


def find_video(session: Session, tenant_id: str, video_id: str, *, deleted_too: bool = False) -> Job | None:
    """`deleted_too`: a deleted video still has its place (a list cursor naming it)."""
    return session.scalar(_video if deleted_too else _undeleted_video, {"video_id": video_id, "tenant_id": tenant_id})


def videos_page(session: Session, tenant_id: str, after: Job | None, limit: int, order: str) -> tuple[list[Job], bool]:
    """Up to `limit` videos after the cursor, newest first (`desc`) or oldest first, and whether more follow."""
    assert order in ("asc", "desc") and limit >= 0
    statement = select(Job).where(Job.tenant_id == tenant_id, Job.deleted_at.is_(None), Job.job_type == "video")
    if after is not None:
        position, mark = tuple_(Job.created_at, Job.id), tuple_(after.created_at, after.id)
        statement = statement.where(position < mark if order == "desc" else position > mark)
    ordering = (Job.created_at.desc(), Job.id.desc()) if order == "desc" else (Job.created_at, Job.id)
    jobs = list(session.scalars(statement.order_by(*ordering).limit(limit + 1)))
    return jobs[:limit], len(jobs) > limit


def video_asset(session: Session, job_id: str, variant: str) -> Asset | None:
    return session.scalar(select(Asset).where(Asset.job_id == job_id, Asset.variant == variant))


def delete_video(session: Session, job: Job) -> list[str]:
    """Marks the video deleted (a queued one is cancelled) and returns the storage keys to delete once this
    commits: its files that no live job still names (a cache hit delivered before hits were re-labelled
    names its source's files), and its own reference copy. The row and its ledger history stay."""
    if job.status == "in_progress":
        raise VideoRunning(job.id)
    if job.status == "queued":
        queue.request_cancel(session, job)
    assets = list(session.scalars(select(Asset).where(Asset.job_id == job.id)))
    job.deleted_at = utcnow()
    session.flush()
    kept = set(session.scalars(select(Asset.storage_key).join(Job, Job.id == Asset.job_id).where(
        Asset.storage_key.in_([a.storage_key for a in assets]), Job.deleted_at.is_(None))))
    keys = [asset.storage_key for asset in assets if asset.storage_key not in kept]
    return keys + ([job.reference_key] if job.reference_key is not None else [])


def record_feedback(session: Session, job: Job, rating: str, reason: str, comment: str) -> Feedback:
    """A rating of a clip (up/down, a short reason, free text): kept, never changed."""
    assert rating in ("up", "down")
    feedback = Feedback(id=f"fb_{uuid.uuid4().hex}", tenant_id=job.tenant_id, job_id=job.id, rating=rating,
                        reason=reason, comment=comment)
    session.add(feedback)
    session.flush()
    return feedback


def feedback_counts(session: Session, job_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per video: its thumbs up and down (every rating counts; feedback is append-only)."""
    counts = {job_id: {"up": 0, "down": 0} for job_id in job_ids}
    if job_ids:
        for job_id, rating, count in session.execute(
                select(Feedback.job_id, Feedback.rating, func.count()).where(Feedback.job_id.in_(job_ids))
                .group_by(Feedback.job_id, Feedback.rating)):
            counts[job_id][rating] = count
    return counts
