"""The review desk: jobs held for a decision, oldest first, approved from the page (operators and
reviewers). It calls the same queue operations as `/v1/admin/reviews`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from vidfactory.api.errors import id_pattern
from vidfactory.jobs import queue
from vidfactory.web.console import Console

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
reviews_shown_max = 50


@router.get("/review")
def review_desk(request: Request) -> Response:
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed("review"):
        return page.error(403, "error.forbidden")
    with page.ctx.sessions() as session:
        held = [{"id": job.id, "tenant_id": job.tenant_id, "prompt": job.prompt, "reason": job.review_reason,
                 "source": job.review_source} for job in queue.pending_reviews(session, reviews_shown_max)]
    return page.render("review.html", held=held)


@router.post("/review/{video_id}/approve")
async def approve(request: Request, video_id: str) -> Response:
    page = Console(request)
    form = {key: str(value) for key, value in (await request.form()).items() if isinstance(value, str)}
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed("review"):
        return page.error(403, "error.forbidden")
    if not page.csrf_ok(form):
        return page.error(403, "error.csrf")
    if id_pattern.fullmatch(video_id) is None:
        return page.error(404, "error.not_found")
    with page.ctx.sessions.begin() as session:
        if video_id not in {job.id for job in queue.pending_reviews(session, reviews_shown_max)}:
            return page.error(404, "error.not_found")
        queue.approve_review(session, video_id, actor=page.principal.actor)
    return RedirectResponse("/review", status_code=303)
