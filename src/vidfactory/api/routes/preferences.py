"""/v1/admin/preferences.jsonl: users' ratings of clips with what made each clip, for later tuning."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import aliased

from vidfactory.api.deps import AdminDep, SessionDep
from vidfactory.api.errors import checked_id, not_found
from vidfactory.api.render import timestamp
from vidfactory.db.models import Feedback, Job

router = APIRouter(prefix="/v1/admin", tags=["admin"])

export_rows_max = 10_000


def preference_record(feedback: Feedback, job: Job, parent: Job | None) -> dict[str, Any]:
    return {
        "feedback_id": feedback.id, "video_id": job.id, "tenant_id": job.tenant_id,
        "prompt": job.prompt, "user_prompt": job.user_prompt, "negative_prompt": job.negative_prompt,
        "parameters": {"model": job.model, "size": f"{job.width}x{job.height}", "seconds": job.seconds,
                       "fps": job.fps, "steps": job.steps, "guidance_scale": job.guidance_scale,
                       "template": job.template, "variables": job.variables, "enhancement": job.enhancement,
                       "batch_id": job.batch_id, "ab_group": job.ab_group},
        "seed": job.seed, "status": job.status, "rating": feedback.rating, "reason": feedback.reason,
        "comment": feedback.comment,
        "parent": None if parent is None else {"video_id": parent.id, "prompt": parent.prompt, "seed": parent.seed},
        "created_at": timestamp(feedback.created_at),
    }


@router.get("/preferences.jsonl", response_class=Response,
            responses={200: {"content": {"application/jsonl": {}}}})
def export_preferences(session: SessionDep, _admin: AdminDep,
                       after: Annotated[str | None, Query(max_length=64, description="a feedback id")] = None,
                       limit: Annotated[int, Query(ge=1, le=export_rows_max)] = 1000) -> Response:
    """One JSON object per line, oldest first: prompt, parameters, seed, rating, reason, parent. Page
    with `after` = the last line's feedback_id."""
    parent = aliased(Job)
    statement = (select(Feedback, Job, parent).join(Job, Job.id == Feedback.job_id)
                 .outerjoin(parent, parent.id == Job.parent_id).order_by(Feedback.seq).limit(limit))
    if after is not None:
        checked_id("feedback", after, "after")
        cursor = session.scalar(select(Feedback.seq).where(Feedback.id == after))
        if cursor is None:
            raise not_found("feedback", after, "after")
        statement = statement.where(Feedback.seq > cursor)
    lines = [json.dumps(preference_record(*row), ensure_ascii=False, sort_keys=True) + "\n"
             for row in session.execute(statement)]
    return Response("".join(lines), media_type="application/jsonl")
